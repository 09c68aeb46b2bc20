"""The manager's side of RSMC (``storage-node rsmc``, tests): one connection to a
node's management port, requests in a row, Digest credentials answered when the node
challenges (off loopback).

    client = RsmcClient("127.0.0.1", 9090, user="admin", password="pw")
    reply = client.request("ERASE", "/", ["ID1", "ID2"])
    reply.code, reply.objects  # 207, [("ID1", 204, "No Content"), ...]
"""
import socket

from storage import auth

VERSION = "RSMP/1.0"
MAX_REPLY_HEAD = 1 << 20


class RsmcProtocolError(Exception):
    """The node's reply is not RSMC, or the connection broke."""


class RsmcReply:
    """``code``, ``reason``, ``headers`` [(name, value)], ``objects`` [(name, code,
    reason)], ``payload`` (bytes after the object lines: INFO's properties, a log)."""

    __slots__ = ("code", "reason", "headers", "objects", "payload")

    def __init__(self, code, reason, headers, objects, payload):
        self.code = code
        self.reason = reason
        self.headers = headers
        self.objects = objects
        self.payload = payload

    def header(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]


class RsmcClient:
    def __init__(self, host, port, user=None, password=None, timeout=3600.0):
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.timeout = timeout
        self._sock = None
        self._file = None
        self._digest = auth.DigestClient(user, password or "") if user else None

    def close(self):
        if self._sock is not None:
            self._file.close()
            self._sock.close()
            self._sock = self._file = None

    def request(self, command, argument="", items=None, headers=None):
        """One request; ``items``: the list lines (RECEIVE, SEND, ERASE). A 401 with
        a Digest challenge is answered once (with credentials)."""
        for _ in range(2):  # no credentials yet (or a stale nonce) -> challenge
            fields = dict(headers or {})
            value = self._digest and self._digest.authorization(command, argument)
            if value:
                fields["Authorization"] = value
            reply = self._exchange(command, argument, items, fields,
                                   objects=len(items) if items is not None else 1)
            if reply.code != 401 or self._digest is None or \
                    not self._digest.challenged(reply.header("WWW-Authenticate")):
                return reply
        return reply

    def _connect(self):
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), self.timeout)
            self._file = self._sock.makefile("rb")

    def _exchange(self, command, argument, items, fields, objects):
        line = f"{command} {argument} {VERSION}" if argument else f"{command} {VERSION}"
        text = [line] + [f"{k}: {v}" for k, v in fields.items()] + [""]
        if items is not None:
            text += list(items) + [""]
        data = ("\r\n".join(text) + "\r\n").encode("utf-8")
        try:
            self._connect()
            self._sock.sendall(data)
            return self._read_reply(objects)
        except (OSError, ValueError) as exc:
            self.close()
            raise RsmcProtocolError(f"{self.host}:{self.port}: {exc}") from None

    def _read_reply(self, objects):
        status = self._line()
        parts = status.split(" ", 2)
        if len(parts) < 2 or parts[0] != VERSION or not parts[1].isdigit():
            raise RsmcProtocolError(f"not an RSMC reply: {status[:80]!r}")
        code, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        headers = []
        length = None
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise RsmcProtocolError("reply without Content-Length")
        body = self._file.read(length)
        if len(body) != length:
            raise RsmcProtocolError("the reply ended early")
        if any(n.lower() == "connection" and v.lower() == "close" for n, v in headers) \
                or code in (400, 413, 501):
            self.close()
        lines = body.split(b"\r\n", objects) if body else []
        payload = b""
        if len(lines) > objects:
            payload = lines.pop()
        parsed = []
        for raw in lines[:objects]:
            fields = raw.decode("utf-8", "replace").split(" ", 2)
            if len(fields) >= 2 and fields[1].isdigit():
                parsed.append((fields[0], int(fields[1]), fields[2] if len(fields) > 2 else ""))
        return RsmcReply(code, reason, headers, parsed, payload)

    def _line(self):
        raw = self._file.readline(MAX_REPLY_HEAD)
        if not raw:
            raise RsmcProtocolError("the node closed the connection")
        return raw.decode("latin-1").rstrip("\r\n")
