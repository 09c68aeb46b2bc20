"""A real S3 server for the s3backup tests: moto's server mode as its own process on
127.0.0.1, and boto3 clients of it."""
import os
import socket
import subprocess
import sys
import time

from beanstalkutil import free_port
from feedsutil import feed_table
from nodeutil import kill_group

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1:``port``; ``start()``/``stop()`` (a stop
    loses every bucket: moto keeps them in memory)."""

    def __init__(self, port=None, log_path=os.devnull):
        self.port = port or free_port()
        self.log_path = log_path
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=20.0):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=self._log, start_new_session=True,
            env={**os.environ, **CREDENTIALS})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                self.client().list_buckets()
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not answer")

    def stop(self):
        kill_group(self.proc)
        self.proc = None

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"max_attempts": 1},
                                          s3={"addressing_style": "path"}))


def s3backup(fid, server, bucket, prefix="", **extra):
    """A [feed.N] s3backup table for ``server`` (a MotoServer or an endpoint URL)."""
    endpoint = getattr(server, "endpoint", server)
    target = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return feed_table(fid, "s3backup", target, endpoint=endpoint, **extra)


def keys(client, bucket, prefix=""):
    """Every key of ``bucket`` under ``prefix``, sorted."""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=prefix):
        out += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(out)
