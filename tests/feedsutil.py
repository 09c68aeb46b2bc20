"""Helpers for the feeds tests: a node with a feeds file, /stat, waiting, and a target
that refuses everything."""
import http.server
import os
import threading
import time

from nodeutil import CHUNK_HEADERS, Node, chunk_id  # noqa: F401


def wait_for(predicate, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def stat(node):
    """{name: value} of the node's /stat lines."""
    status, _, body = node.request("GET", "/stat")
    assert status == 200
    return parse_stat(body)


def parse_stat(body):
    """{name: value} of /stat lines (``kind name value``)."""
    out = {}
    for line in body.decode().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def pending(node, feed):
    return int(stat(node)[f"feed.{feed}.pending"])


def write_feeds(path, text):
    path.write_text(text)
    return path


def replication(fid, node_or_port, **extra):
    port = node_or_port if isinstance(node_or_port, int) else node_or_port.port
    return feed_table(fid, "replication", f"http://127.0.0.1:{port}", **extra)


def feed_table(fid, kind, target, **extra):
    """A [feed.N] table of a feeds file; ``extra`` keys as TOML values."""
    lines = [f"[feed.{fid}]", f'type = "{kind}"', f'target = "{target}"']
    for key, value in extra.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str):
            value = f'"{value}"'
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def delivery_pid(node):
    """The pid of the node's feeds delivery process (it writes it in its lock file)."""
    path = os.path.join(node.docroot, ".storage-node", "feeds.lock")
    with open(path) as stream:
        return int(stream.read().split()[0])


def wait_delivery_pid(node, old=None, timeout=15.0):
    found = []

    def ready():
        try:
            pid = delivery_pid(node)
        except (OSError, ValueError, IndexError):
            return False
        if pid == old:
            return False
        found.append(pid)
        return True
    assert wait_for(ready, timeout), "no delivery process"
    return found[-1]


class RefusingTarget:
    """An HTTP server on 127.0.0.1 that answers every request with ``status``; while
    ``gate`` is clear, requests wait (up to 30 s) before their answer."""

    def __init__(self, status=503):
        answer = status
        gate = self.gate = threading.Event()
        gate.set()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _refuse(self):
                gate.wait(30)
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            do_HEAD = do_GET = do_PUT = do_DELETE = _refuse

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.gate.set()  # no request left waiting
        self.server.shutdown()
        self.server.server_close()
