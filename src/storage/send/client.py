"""The client side of a legacy SEND (``storage-node send``, tests, tools): asks a node
to push one of its chunks to another cluster and reads the outcome.

One ``SendClient`` per source node keeps one connection. The first request goes out
without credentials; the node's 401 carries a Digest challenge, answered on the same
connection. Later requests reuse the nonce with the next nonce count, so a batch of
chunks costs one 401 in all; a ``stale=true`` refusal gets a fresh nonce silently.
"""
import http.client
import re
from urllib.parse import urlsplit

from storage import auth

RESULT_LINE = re.compile(r"Remote cluster returned: (\d{3})\s*\Z")


class SendError(Exception):
    """The source node could not be asked (unreachable, connection broken)."""


class SendResult:
    """``code``: the final result (201 stored, 409 already there, else a failure);
    ``lines``: the reply's body lines without keep-alive newlines."""

    __slots__ = ("code", "lines")

    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def ok(self):
        return self.code in (201, 409)

    @property
    def reason(self):
        """The line before the result line, if any (why it failed)."""
        return self.lines[-2] if len(self.lines) > 1 else ""


class SendClient:
    """SEND requests to the node at ``node_url`` (http://host:port) as ``user``."""

    def __init__(self, node_url, user, password, timeout=3600.0):
        parts = urlsplit(node_url if "://" in node_url else "http://" + node_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http node URL: {node_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.user = user
        self.password = password
        self.timeout = timeout
        self._conn = None
        self._digest = auth.DigestClient(user, password)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, chunk_id, target, cluster, remote_auth=None):
        """SEND ``chunk_id`` to ``target`` ("host:port") of ``cluster``: a SendResult.
        Raises SendError when the node cannot be reached."""
        uri = f"/{chunk_id}?admin"
        headers = {"Castor-System-Cluster": cluster, "Castor-System-Target": target}
        if remote_auth:
            headers["Castor-System-Auth"] = remote_auth
        for _ in range(3):  # no credentials yet -> challenge -> (stale -> challenge)
            status, challenges, body = self._request(uri, headers)
            if status != 401 or not self._digest.challenged(challenges):
                return _result(status, body)
        return _result(status, body)

    def _request(self, uri, headers):
        headers = dict(headers)
        value = self._digest.authorization("SEND", uri)
        if value:
            headers["Authorization"] = value
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout)
                fresh = True
            else:
                fresh = False
            try:
                self._conn.request("SEND", uri, headers=headers)
                resp = self._conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if fresh or attempt:
                    raise SendError(f"SEND {uri} on {self.host}:{self.port}: {exc}") from exc
                continue  # a kept-alive connection the node had closed: once more
            if resp.will_close:
                self.close()
            return resp.status, resp.msg.get_all("WWW-Authenticate"), body
        raise AssertionError("unreachable")


def _result(status, body):
    lines = [line for line in body.decode("utf-8", "replace").split("\n") if line.strip()]
    code = status
    if lines:
        match = RESULT_LINE.match(lines[-1])
        if match:
            code = int(match.group(1))
    elif status == 200:
        code = 0  # a 200 without a result line: the node did not finish
    return SendResult(code, lines)
