"""Start a real storage-node process on 127.0.0.1 for integration tests."""
import http.client
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

CHUNK_HEADERS = {
    "X-oio-Chunk-Meta-Content-Storage-Policy": "SINGLE",
    "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1",
    "X-oio-Chunk-Meta-Chunk-Pos": "0",
    "X-oio-Chunk-Meta-Full-Path": "acct/cont/obj/1/0123456789ABCDEF0123456789ABCDEF",
}


def chunk_id(n):
    """A deterministic 64-hex chunk id."""
    return "%064X" % (0xC0FFEE00000000000000000000000000 + n)


class Node:
    """A storage-node child process; ``stop()`` or the fixture ends it."""

    def __init__(self, tmp_path, service_id="rawx-test", docroot=None, workers=1, env=None,
                 **extra):
        self.tmp_path = tmp_path
        self.env = env  # variables merged over os.environ for the node process
        self.docroot = str(docroot or tmp_path / "data")
        self.service_id = service_id
        self.conf_path = tmp_path / "rawx.conf"
        self.access_path = tmp_path / "access.log"
        lines = ["listen 127.0.0.1:0", "namespace OPENIO", f"docroot {self.docroot}",
                 f"workers {workers}", f"access_log {self.access_path}"]
        if service_id:
            lines.append(f"service_id {service_id}")
        lines += [f"{k} {v}" for k, v in extra.items()]
        self.conf_path.write_text("\n".join(lines) + "\n")
        self.proc = None
        self.port = None
        self.tls_port = None
        self.rsmc_port = None
        self.swap_port = None
        self.stderr_path = tmp_path / "stderr.log"

    def start(self, timeout=15, env=None):
        """Start the node; ``env`` (or the one given at construction) is merged over
        os.environ for the child."""
        env = env if env is not None else self.env
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "storage", "serve", "-f", str(self.conf_path)],
            stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True,
            env=None if env is None else {**os.environ, **env})
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                    tls_match = re.search(rb"https://127\.0\.0\.1:(\d+)", line)
                    self.tls_port = int(tls_match.group(1)) if tls_match else None
                    rsmc_match = re.search(rb"rsmc [0-9.]+:(\d+)", line)
                    self.rsmc_port = int(rsmc_match.group(1)) if rsmc_match else None
                    swap_match = re.search(rb"swap [0-9.]+:(\d+)", line)
                    self.swap_port = int(swap_match.group(1)) if swap_match else None
                    return self
            if self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"node did not start: {line!r} {self.stderr_path.read_text()}")

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """One request; returns (status, headers dict lower-cased, body bytes)."""
        own = conn is None
        conn = conn or self.conn()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            if own:
                conn.close()

    def put(self, cid, body, headers=None, **kw):
        all_headers = dict(CHUNK_HEADERS)
        all_headers.update(headers or {})
        return self.request("PUT", f"/{cid}", body=body, headers=all_headers, **kw)

    def raw(self, data, read_timeout=5, shut=False):
        """Send raw bytes, read until the server closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout) as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            chunks = []
            s.settimeout(read_timeout)
            while True:
                try:
                    got = s.recv(65536)
                except socket.timeout:
                    break
                if not got:
                    break
                chunks.append(got)
            return b"".join(chunks)

    def chunk_path(self, cid, width=3, depth=1):
        parts = [cid[i * width:(i + 1) * width] for i in range(depth)]
        return os.path.join(self.docroot, *parts, cid)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def worker_pids(self):
        """The master's children (the workers) as a sorted list of pids."""
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as stream:
                return sorted(int(p) for p in stream.read().split())
        except FileNotFoundError:
            return []

    def kill(self):
        kill_group(self.proc)

    def access_lines(self, containing=None, timeout=5):
        """The access log's lines; with ``containing``, wait (bounded) until one has it:
        a line is written just after its reply is sent."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines = self.access_path.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if containing is None or any(containing in l for l in lines) \
                    or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def kill_group(proc):
    """SIGKILL the process group of ``proc`` (a Popen started with
    start_new_session), and reap it; nothing if it is None or gone."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
