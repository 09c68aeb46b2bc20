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


def put_backup(client, bucket, chunk_id, body, prefix="", headers=None):
    """Write ``body`` as the s3backup feed would back up a chunk of it (the format of
    ``storage.feeds.s3``, metadata encoded by its own functions): the fixture of the
    restore tests and benchmark that need many objects faster than a feed writes
    them. -> the chunk's PUT headers."""
    import hashlib

    from storage.feeds import s3 as s3feed
    headers = {"X-oio-Chunk-Meta-Content-Storage-Policy": "SINGLE",
               "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1",
               "X-oio-Chunk-Meta-Chunk-Pos": "0",
               "X-oio-Chunk-Meta-Full-Path": "acct/cont/obj/1/" + "0123456789ABCDEF" * 2,
               **(headers or {}),
               "X-oio-Chunk-Meta-Chunk-Id": chunk_id,
               "X-oio-Chunk-Meta-Chunk-Hash": hashlib.md5(body).hexdigest().upper(),
               "X-oio-Chunk-Meta-Chunk-Size": str(len(body))}
    key = s3feed.object_key(prefix, chunk_id)
    user, sidecar = s3feed.encode_metadata(chunk_id, headers)
    if sidecar is not None:
        client.put_object(Bucket=bucket, Key=key + s3feed.SIDECAR_SUFFIX, Body=sidecar)
    client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=user)
    return headers
