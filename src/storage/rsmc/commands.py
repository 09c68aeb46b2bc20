"""What RSMC requests do on a storage node (spec rsmc.md). Blocking work: a worker's
transfer thread runs ``RsmcNode.execute``; the parser and the connection never block.

Objects are chunks. A local object is a chunk id, named under the request's base path
(``/`` or empty: chunk ids have no directories); a name that leaves the base path
(``..``, an absolute name) gets 403, one that is not a chunk id 400, and a chunk file
that is not a regular file (a symlink) 403. Remote objects are RAWX chunk URLs
``http://host:port/<ID>``; their host must resolve only to addresses inside
``rsmc_peers`` (403 otherwise, before any connection), and the connection goes to the
address that was checked.

Per-object codes make the global code: the one code when all agree, 207 when they
differ, 200 for an empty list.
"""
import http.client
import ipaddress
import logging
import os
import socket
import stat
from http import HTTPStatus
from urllib.parse import urlsplit

from storage.errors import (BadRequest, ChecksumMismatch, ChunkExists, ChunkNotFound,
                            NoSpace, PermissionDenied, StorageError)
from storage.feeds.queue import QueueError
from storage.rawx import meta as chunkmeta
from storage.rawxclient import RawxClient, RawxError
from storage.send.push import Cancelled, CorruptSource, TargetRefused, push_chunk

log = logging.getLogger(__name__)

META_PREFIXES = ("x-oio-chunk-meta-", "x-oio-ext-")
PIECE = 1 << 20
DEFAULT_PEERS = "127.0.0.0/8,::1/128"


class ObjectError(Exception):
    """One object failed: ``code`` and a one-line ``reason``."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code


def phrase(code):
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def parse_peers(text):
    """'CIDR[,CIDR...]' -> [ip_network]; ValueError naming the bad entry."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not a network: {item!r}") from None
    if not networks:
        raise ValueError("empty list")
    return networks


class Response:
    """An RSMC reply: ``code``/``reason``, extra ``headers`` [(name, value)], ``lines``
    (one per object), then a payload (bytes) or a ``file`` (fd, offset, length,
    release) streamed after it (LOG). ``close``: the connection ends after it."""

    __slots__ = ("code", "reason", "lines", "payload", "file", "close", "headers")

    def __init__(self, code, reason=None, lines=(), payload=b"", file=None, close=False,
                 headers=()):
        self.code = code
        self.reason = reason or phrase(code)
        self.lines = list(lines)
        self.payload = payload
        self.file = file
        self.close = close
        self.headers = list(headers)

    def head_and_body(self, server):
        """The bytes of the status line, headers, object lines and payload (the file,
        if any, follows them; Content-Length counts it)."""
        body = "".join(f"{line}\r\n" for line in self.lines).encode("utf-8", "replace")
        body += self.payload
        rest = self.file[2] if self.file is not None else 0
        headers = [f"RSMP/1.0 {self.code} {self.reason}", f"Server: {server}"]
        headers += [f"{name}: {value}" for name, value in self.headers]
        headers.append(f"Content-Length: {len(body) + rest}")
        return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1", "replace") + body


def global_code(codes):
    if not codes:
        return 200
    first = codes[0]
    return first if all(c == first for c in codes) else 207


def object_line(name, code, reason=None):
    return f"{name} {code} {reason or phrase(code)}"


class RsmcNode:
    """RSMC commands on ``repo`` (FsChunkRepo). ``events``: the node's event sink or
    None; ``peers``: [ip_network] remote objects may be in; ``log_path``: the request
    log file or None; ``timeout``: seconds per connect or stalled read on a peer."""

    def __init__(self, config, repo, events, peers, log_path, log_keep, timeout,
                 feeds=None):
        self.config = config
        self.repo = repo
        self.events = events
        self.feeds = feeds  # storage.feeds.FeedRecorder or None
        self.peers = peers
        self.log_path = log_path
        self.log_keep = log_keep
        self.timeout = timeout

    def execute(self, request, cancelled=lambda: False):
        """Carry out a parsed request (auth already checked): a Response."""
        handler = getattr(self, "_" + request.command.lower())
        return handler(request, cancelled)

    # ---- names ---------------------------------------------------------------------
    @staticmethod
    def local_chunk(base, name):
        """The chunk id ``name`` under ``base`` names; ObjectError otherwise."""
        if name.startswith("/"):
            raise ObjectError(403, "absolute path")
        parts = [p for p in (base + "/" + name).split("/") if p]
        if any(p in ("..", ".") for p in parts):
            raise ObjectError(403, "path escapes the base path")
        if len(parts) != 1 or not chunkmeta.valid_chunk_id(parts[0]):
            raise ObjectError(400, "not a chunk id")
        return parts[0].upper()

    def _open(self, chunk_id):
        """(reader, StoredMeta) of a local chunk that is a regular file."""
        path = self.repo.chunk_path(chunk_id)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ObjectError(404, "no such chunk") from None
        except OSError as exc:
            raise ObjectError(500, f"cannot stat the chunk: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectError(403, "not a regular file")
        try:
            reader = self.repo.reader(chunk_id, nofollow=True)
        except ChunkNotFound:
            raise ObjectError(404, "no such chunk") from None
        except PermissionDenied:
            raise ObjectError(403, "not a regular file") from None
        except StorageError as exc:
            raise ObjectError(500, str(exc).splitlines()[0]) from None
        try:
            return reader, chunkmeta.StoredMeta(chunk_id, reader.read_attrs())
        except BaseException:
            reader.close()
            raise

    def remote(self, url):
        """(RawxClient to the checked address, chunk path) of a peer URL."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ObjectError(400, "not an http:// URL")
        try:
            port = parts.port or 80
        except ValueError:
            raise ObjectError(400, "bad port") from None
        try:
            infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ObjectError(502, f"cannot resolve {parts.hostname}: {exc.strerror}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses or not all(any(a in net for net in self.peers) for a in addresses):
            raise ObjectError(403, f"{parts.hostname} is not an allowed peer")
        address = addresses[0]
        host = f"[{address}]" if address.version == 6 else str(address)
        client = RawxClient(f"http://{host}:{port}", timeout=self.timeout,
                            host=parts.netloc)
        return client, parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")

    # ---- commands ------------------------------------------------------------------
    def _each(self, items, one, cancelled):
        lines, codes = [], []
        for item in items:
            if cancelled():
                break
            try:
                code, reason = one(item)
            except ObjectError as exc:
                code, reason = exc.code, str(exc)
            except Cancelled:  # the manager left: nobody reads the rest
                break
            name = item.split()[0] if item.split() else item
            lines.append(object_line(name, code, reason))
            codes.append(code)
        code = global_code(codes)
        return Response(code, lines=lines)

    def _erase(self, request, cancelled):
        base = request.argument
        return self._each(request.items, lambda item: self._erase_one(base, item), cancelled)

    def _erase_one(self, base, name):
        chunk_id = self.local_chunk(base, name)
        reader, stored = self._open(chunk_id)
        reader.close()
        if self.feeds is not None:  # before the unlink, as a RAWX DELETE
            try:
                self.feeds.record_deleted(stored, "")
            except QueueError as exc:
                raise ObjectError(503, f"cannot queue the delete for the feeds: {exc}") \
                    from None
        own = chunkmeta.XATTR_FULLPATH + chunk_id if self.config.shallow_copy else None
        try:
            self.repo.delete(chunk_id, own_attr=own)
        except ChunkNotFound:
            raise ObjectError(404, "no such chunk") from None
        except StorageError as exc:
            raise ObjectError(500, str(exc).splitlines()[0]) from None
        if self.events is not None:
            self.events.emit("storage.chunk.deleted", "",
                             stored.event_data(self.config.listen, self.config.service_id))
        return 204, None

    def _info(self, request, cancelled):
        target = request.argument
        try:
            if "://" in target:
                code, pairs = self._remote_info(target)
            else:
                reader, stored = self._open(self.local_chunk("/", target))
                reader.close()
                code, pairs = 200, stored.reply_headers()
        except ObjectError as exc:
            return Response(exc.code, lines=[object_line(target, exc.code, str(exc))])
        payload = "".join(f"{name}: {value}\r\n" for name, value in pairs)
        return Response(code, lines=[object_line(target, code)],
                        payload=payload.encode("latin-1", "replace"))

    def _remote_info(self, url):
        client, path = self.remote(url)
        try:
            status, headers = client.head(path)
        except RawxError as exc:
            raise ObjectError(502, str(exc).splitlines()[0]) from None
        finally:
            client.close()
        if status != 200:
            raise ObjectError(status, "the peer answered HEAD with this status")
        return 200, [(_canonical(name), value) for name, value in headers.items()
                     if name.startswith(META_PREFIXES)]

    def _send(self, request, cancelled):
        base = request.argument
        return self._each(request.items, lambda item: self._send_one(base, item, cancelled),
                          cancelled)

    def _send_one(self, base, item, cancelled):
        fields = item.split()
        if len(fields) != 2:
            raise ObjectError(400, "expected: <local chunk> <destination url>")
        chunk_id = self.local_chunk("/", fields[0])
        destination = fields[1]
        parts = urlsplit(destination)
        if parts.path in ("", "/"):  # a node only: the chunk keeps its id under the base
            destination = f"{parts.scheme}://{parts.netloc}/{base.strip('/')}/{chunk_id}"
        client, path = self.remote(destination)
        dest_id = self.local_chunk("/", path.split("?")[0]) if path else None
        if dest_id is None:
            client.close()
            raise ObjectError(400, "the destination is not a chunk URL")
        try:
            reader, stored = self._open(chunk_id)
        except ObjectError:
            client.close()
            raise

        def check_cancel():
            if cancelled():
                raise Cancelled()
        try:
            code = push_chunk(client, chunk_id, dest_id, reader, stored, check_cancel)
        except CorruptSource as exc:
            log.error("RSMC SEND %s: not sent, the chunk is corrupt: %s", chunk_id, exc)
            raise ObjectError(500, f"local chunk is corrupt: {exc}") from None
        except TargetRefused as exc:
            raise ObjectError(exc.status, str(exc)) from None
        except RawxError as exc:
            raise ObjectError(exc.status or 502, str(exc).splitlines()[0]) from None
        finally:
            reader.close()
            client.close()
        return code, None

    def _receive(self, request, cancelled):
        base = request.argument
        defaults = {name: value for name, value in request.fields
                    if name.startswith(META_PREFIXES)}
        return self._each(request.items,
                          lambda item: self._receive_one(base, item, defaults), cancelled)

    def _receive_one(self, base, item, defaults):
        fields = item.split()
        if not 1 <= len(fields) <= 2:
            raise ObjectError(400, "expected: <source url> [<destination path>]")
        source = fields[0]
        name = fields[1] if len(fields) == 2 else urlsplit(source).path.rsplit("/", 1)[-1]
        chunk_id = self.local_chunk(base, name)
        client, path = self.remote(source)
        try:
            if os.path.lexists(self.repo.chunk_path(chunk_id)):
                raise ObjectError(409, "the chunk exists")
            try:
                body = client.get(path, headers={"rsmc": "required"})
            except RawxError as exc:
                raise ObjectError(exc.status or 502, str(exc).splitlines()[0]) from None
            headers = dict(defaults)
            headers.update((k, v) for k, v in body.headers.items()
                           if k.startswith(META_PREFIXES))
            if not any(k.startswith("x-oio-chunk-meta-") for k in headers):
                body.abandon()
                raise ObjectError(400, "the source sent no chunk metadata (give "
                                       "X-oio-Chunk-Meta-* header lines in the request)")
            headers.pop("x-oio-chunk-meta-chunk-id", None)  # the source's id, not ours
            return self._store(chunk_id, headers, body), None
        finally:
            client.close()

    def _store(self, chunk_id, headers, body):
        """Store a fetched body as ``chunk_id`` with ``headers`` (lower-case metadata):
        201, or ObjectError; a body that does not match its hash leaves nothing."""
        try:
            put_meta = chunkmeta.PutMeta(chunk_id, headers)
        except BadRequest as exc:
            body.abandon()
            raise ObjectError(400, f"bad chunk metadata from the source: {exc}") from None
        hasher = chunkmeta.new_hasher(put_meta.method.algo)
        try:
            writer = self.repo.writer(chunk_id, body.resp.length)
            writer.open()
        except ChunkExists:
            body.abandon()
            raise ObjectError(409, "the chunk exists") from None
        except StorageError as exc:
            body.abandon()
            raise ObjectError(507 if isinstance(exc, NoSpace) else 500,
                              str(exc).splitlines()[0]) from None
        received = 0
        buf = bytearray(PIECE)
        view = memoryview(buf)
        try:
            while True:
                try:
                    got = body.resp.readinto(buf)
                except (OSError, http.client.HTTPException) as exc:
                    raise ObjectError(502, f"the source failed mid-body: {exc!r}") from None
                if not got:
                    break
                writer.write(view[:got], hasher)
                received += got
            if body.resp.length:  # http.client left bytes unread: the source stopped
                raise ObjectError(502, "the source's body ended early")
            attrs = put_meta.finish([], hasher.hexdigest().upper(), received)
            writer.set_attrs(attrs)
            writer.commit()
        except (BadRequest, ChecksumMismatch) as exc:
            writer.abort()
            raise ObjectError(400, f"verification failed: {exc}") from None
        except ObjectError:
            writer.abort()
            body.abandon()
            raise
        except StorageError as exc:
            writer.abort()
            raise ObjectError(507 if isinstance(exc, NoSpace) else 500,
                              str(exc).splitlines()[0]) from None
        except BaseException:
            writer.abort()
            raise
        body.finish()
        if self.events is None and self.feeds is None:
            return 201
        stored = chunkmeta.StoredMeta(chunk_id, put_meta.xattrs())
        if self.feeds is not None:  # before the 201, as a PUT
            try:
                self.feeds.record_new(stored, "")
            except QueueError as exc:
                try:
                    self.repo.delete(chunk_id)
                except StorageError:
                    log.error("cannot remove %s again", chunk_id)
                raise ObjectError(503, f"cannot queue the chunk for the feeds: {exc}") \
                    from None
        if self.events is not None:
            self.events.emit("storage.chunk.new", "",
                             stored.event_data(self.config.listen, self.config.service_id))
        return 201

    def _log(self, request, cancelled):
        return self._log_file(self.log_path, "server.log", current=True)

    def _get(self, request, cancelled):
        name = request.argument.lstrip("/")
        prefix, _, number = name.rpartition(".")
        if prefix != "server.log" or not number.isdigit() or not number.isascii() \
                or not 1 <= int(number) <= self.log_keep:
            return Response(404, lines=[object_line(name, 404, "no such log backup")])
        path = f"{self.log_path}.{int(number)}" if self.log_path else None
        return self._log_file(path, name)

    def _log_file(self, path, name, current=False):
        if not path:
            reason = "the request log is not written to a file (access_log)"
            return Response(404, lines=[object_line(name, 404, reason)])
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            if current:  # no request logged since the start
                return Response(200, lines=[object_line(name, 200)])
            return Response(404, lines=[object_line(name, 404, "no such log file")])
        except OSError as exc:
            return Response(500, lines=[object_line(name, 500, exc.strerror)])
        size = os.fstat(fd).st_size
        return Response(200, lines=[object_line(name, 200)],
                        file=(fd, 0, size, lambda: os.close(fd)))


def _canonical(name):
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))



