"""The node's one outbound HTTP/1.1 client for RAWX chunk services (ours or oio-rawx):
EC objects, SEND, and later feeds and RSMC use it.

One ``RawxClient`` per node holds one persistent connection (http.client);
it is not thread-safe: give each thread its own. PUT streams the body with
``Transfer-Encoding: chunked`` (one HTTP chunk per write, or a chunk file sent by the
compiled ``transfer.send_file`` without the GIL) and sends the metadata known only at
the end as trailers; GET reads a byte range as a stream; HEAD can ask the server to
re-hash the chunk; ``info()`` reads ``/info``. ``auth`` credentials go to the node as
Basic on every request.
"""
import base64
import http.client
import logging
import socket
from urllib.parse import urlsplit

from storage.fast import load

transfer = load("transfer")
log = logging.getLogger(__name__)

META = "X-oio-Chunk-Meta-"
DEFAULT_TIMEOUT = 30.0


class RawxError(Exception):
    """A RAWX request failed: ``status`` is the HTTP status, or None when the
    node could not be reached or the connection broke."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def split_chunk_url(url):
    """'http://host:port/ID' -> ('http://host:port', 'ID')."""
    parts = urlsplit(url)
    cid = parts.path.lstrip("/")
    if parts.scheme != "http" or not parts.netloc or not cid:
        raise ValueError(f"not a chunk URL: {url!r}")
    return f"http://{parts.netloc}", cid


class RawxClient:
    """Requests to one RAWX node at ``base_url`` (http://host:port)."""

    def __init__(self, base_url, timeout=DEFAULT_TIMEOUT, auth=None, host=None):
        parts = urlsplit(base_url if "://" in base_url else "http://" + base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http node URL: {base_url!r}")
        self.base_url = f"http://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.timeout = timeout
        self._extra = {}  # headers of every request
        if auth is not None:  # (user, password)
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode("utf-8")).decode("ascii")
            self._extra["Authorization"] = "Basic " + token
        if host is not None:  # the Host a node reached by its address expects
            self._extra["Host"] = host
        self._conn = None
        self._used = False      # the connection served a request already

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def shutdown(self):
        """Shut the connection down from another thread: a request blocked on it
        fails at once (the connection itself is closed by its owner)."""
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connection(self):
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._used = False
        return self._conn

    def _fail(self, what, exc):
        self.close()
        return RawxError(f"{what} on {self.base_url}: {exc.__class__.__name__}: {exc}")

    # -- simple requests -----------------------------------------------------
    def _simple(self, method, path, headers):
        """A body-less request, retried once on a fresh connection when a
        kept-alive one turns out to be closed. Returns the response (body unread)."""
        if self._extra:
            headers = {**headers, **self._extra}
        for attempt in (0, 1):
            conn = self._connection()
            reused = self._used
            try:
                conn.request(method, path, headers=headers)
                resp = conn.getresponse()
                self._used = True
                return resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if not reused or attempt:
                    raise self._fail(f"{method} {path}", exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise self._fail(f"{method} {path}", exc) from exc

    def head(self, chunk_id, check_hash=False, expected_hash=None):
        """HEAD a chunk: (status, {lower-case header: value}); with
        ``check_hash`` the server re-hashes the data (412 on mismatch)."""
        headers = {}
        if check_hash:
            headers["X-oio-check-hash"] = "true"
            if expected_hash:
                headers[META + "Chunk-Hash"] = expected_hash
        resp = self._simple("HEAD", "/" + chunk_id, headers)
        try:
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail("HEAD", exc) from exc
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}

    def info(self):
        """``GET /info``: {name: value} of its ``name value`` lines (``namespace``,
        ``path``, ...). RawxError unless it answers 200."""
        resp = self._simple("GET", "/info", {})
        try:
            body = resp.read(64 << 10)
            if not resp.isclosed():
                resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail("GET /info", exc) from exc
        if resp.status != 200:
            raise RawxError(f"GET /info on {self.base_url}: {resp.status} {resp.reason}",
                            resp.status)
        info = {}
        for line in body.decode("utf-8", "replace").splitlines():
            name, _, value = line.strip().partition(" ")
            if name:
                info[name] = value.strip()
        return info

    def delete(self, chunk_id):
        """DELETE a chunk; returns the status (204, 404...)."""
        resp = self._simple("DELETE", "/" + chunk_id, {})
        try:
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail("DELETE", exc) from exc
        return resp.status

    def get(self, chunk_id, start=None, end=None, headers=None):
        """GET a chunk, or bytes [start, end] of it: a ``ChunkReader``; ``headers``
        are added to the request. Raises RawxError unless the reply is 200 (whole
        chunk) or 206."""
        headers = dict(headers or {})
        if start is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        resp = self._simple("GET", "/" + chunk_id, headers)
        if resp.status not in (200, 206):
            status = resp.status
            try:
                resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
            raise RawxError(f"GET /{chunk_id} on {self.base_url}: {status} {resp.reason}", status)
        if start is not None and resp.status == 200 and start != 0:
            self.close()
            raise RawxError(f"GET /{chunk_id} on {self.base_url}: range ignored", 200)
        return ChunkReader(self, resp)

    # -- streamed upload -----------------------------------------------------
    def put(self, chunk_id, headers, trailer_names=()):
        """Start a chunked PUT of a chunk: a ``ChunkUpload``."""
        conn = self._connection()
        try:
            conn.putrequest("PUT", "/" + chunk_id, skip_host="Host" in self._extra,
                            skip_accept_encoding=True)
            for name, value in {**headers, **self._extra}.items():
                conn.putheader(name, value)
            conn.putheader("Transfer-Encoding", "chunked")
            if trailer_names:
                conn.putheader("Trailer", ", ".join(trailer_names))
            conn.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail(f"PUT /{chunk_id}", exc) from exc
        return ChunkUpload(self, conn, chunk_id)


class ChunkReader:
    """The body of a GET; read exact pieces with ``readinto_exact``."""

    def __init__(self, client, resp):
        self.client = client
        self.resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def readinto_exact(self, view):
        """Fill the writable buffer completely; RawxError if the body ends
        first or the connection breaks."""
        view = memoryview(view).cast("B")
        got = 0
        total = view.nbytes
        try:
            while got < total:
                n = self.resp.readinto(view[got:])
                if not n:
                    raise RawxError(f"chunk body from {self.client.base_url} ended "
                                    f"{total - got} bytes early")
                got += n
        except (OSError, http.client.HTTPException) as exc:
            raise self.client._fail("GET body", exc) from exc
        except RawxError:
            self.client.close()
            raise
        return total

    def finish(self):
        """Drain what is left (keeps the connection) or drop it if much is left."""
        if self.resp.length is not None and self.resp.length > 1 << 16:
            self.abandon()
            return
        try:
            self.resp.read()
        except (OSError, http.client.HTTPException):
            self.client.close()

    def abandon(self):
        """Stop reading: the connection cannot be reused."""
        self.client.close()


class ChunkUpload:
    """An open chunked PUT: ``write(data)`` then ``finish(trailers)``."""

    def __init__(self, client, conn, chunk_id):
        self.client = client
        self.conn = conn
        self.chunk_id = chunk_id
        self.sent = 0

    def write(self, data):
        """Send one HTTP chunk (nothing for empty data: a zero-size chunk
        would end the body)."""
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        try:
            self.conn.send(b"%x\r\n" % view.nbytes)
            self.conn.send(view)
            self.conn.send(b"\r\n")
        except OSError as exc:
            raise self._early_reply(exc) from exc
        self.sent += view.nbytes

    def send_file(self, fd, offset, length, hasher, buf):
        """Send ``length`` bytes of an open file from ``offset`` as HTTP chunks of at
        most len(buf) bytes, hashing them into ``hasher`` (compiled, GIL released).
        A file read error is raised as ``transfer.SourceReadError`` (an OSError); a
        socket error or timeout as RawxError."""
        sock = self.conn.sock
        try:
            sent = transfer.send_file(sock.fileno(), fd, offset, length, hasher, buf,
                                      sock.gettimeout(), True)
        except transfer.SourceReadError:
            self.abort()
            raise
        except OSError as exc:
            raise self._early_reply(exc) from exc
        self.sent += sent
        return sent

    def finish(self, trailers=None):
        """End the body with the trailers; returns the reply headers of the
        201, RawxError otherwise."""
        block = b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode("latin-1")
                                     for k, v in (trailers or {}).items()) + b"\r\n"
        try:
            self.conn.send(block)
            resp = self.conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self.client._fail(f"PUT /{self.chunk_id}", exc) from exc
        self.client._used = True
        if resp.status != 201:
            self.client.close()
            raise RawxError(f"PUT /{self.chunk_id} on {self.client.base_url}: "
                            f"{resp.status} {resp.reason}", resp.status)
        return {k.lower(): v for k, v in resp.getheaders()}

    def abort(self):
        """Drop the connection mid-body: the server discards the chunk."""
        self.client.close()

    def _early_reply(self, exc):
        """The server closed while we sent: report its status if it replied."""
        try:
            self.conn.sock.settimeout(1.0)
            resp = self.conn.getresponse()
            status, reason = resp.status, resp.reason
        except (OSError, http.client.HTTPException, AttributeError):
            status = reason = None
        self.client.close()
        if status is not None:
            return RawxError(f"PUT /{self.chunk_id} on {self.client.base_url}: "
                             f"{status} {reason}", status)
        return RawxError(f"PUT /{self.chunk_id} on {self.client.base_url}: {exc}")
