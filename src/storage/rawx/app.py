"""The RAWX request handlers: routing, chunk PUT/GET/HEAD/DELETE, /info and /stat.

Python decides here; bytes move in the connection and ``_fastpath``. Storage errors
become statuses in exactly one place, ``STATUS``.
"""
import logging
import os
import time
from urllib.parse import unquote

from storage import accesslog
from storage.errors import (BadRequest, ChecksumMismatch, ChunkExists, ChunkNotFound,
                            CorruptChunk, NoSpace, PermissionDenied, StorageError,
                            VolumeUnavailable)
from storage.fast import load
from storage.feeds import QueueError
from storage.http.reply import SMALL_FILE, BlockingReply, FileBody, Reply, StreamBody
from storage.http.response import encode_fields, last_modified
from storage.rawx import compress
from storage.rawx import meta as chunkmeta
from storage.rawx import metrics
from storage.rawx.admin import AdminRoutes, BufferedBody
from storage.rawx.ranges import UNSATISFIABLE, parse_range
from storage.repo import map_os_error
from storage.send.route import SendRoutes, query_args
from storage.stats import COUNTERS, INDEX, ROW

streamio = load("streamio")
getcore = load("getcore")
log = logging.getLogger(__name__)

STATUS = [  # most specific first
    (BadRequest, 400), (PermissionDenied, 403), (ChunkNotFound, 404), (ChunkExists, 409),
    (ChecksumMismatch, 412), (CorruptChunk, 412), (NoSpace, 507),
    (VolumeUnavailable, 503), (StorageError, 500),
]
QUIET_BODY = {404, 409, 416}
WRONG_HOST_ECHO = 100  # characters of a foreign Host a 418 quotes
META_CACHE_SIZE = 4096  # chunks whose metadata a worker keeps decoded
RACY_SECONDS = 1.0
EARLY_BYTES = 64 << 10  # body bytes an upload holds in memory until its file exists
SKIP_INLINE = 1 << 20  # a compressed GET inflating past this offset does it on a thread
ACCEPT_RANGES = (("Accept-Ranges", "bytes"),)
CHUNK_METHODS = {"PUT": "put", "GET": "get", "HEAD": "head", "DELETE": "del",
                 "POST": "post", "COPY": "copy"}
ALLOW = "GET, HEAD, PUT, DELETE, POST, COPY, SEND"


def error_reply(exc):
    """The one table turning storage exceptions into replies."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            break
    else:
        status = 500
    reason = str(exc).splitlines()[0] if status != 500 else "internal error"
    if status == 500:
        log.error("internal error: %r", exc)
    body = b"" if status in QUIET_BODY else (reason + "\n").encode("utf-8", "replace")
    return Reply(status, body=body, reason=reason)


def _one_line_500(reason):
    """A 500 whose reason is safe and useful to show (not an internal error)."""
    log.error("%s", reason)
    return Reply(500, body=(reason + "\n").encode(), reason=reason)


def parse_chunk_id(raw):
    """The upper-case chunk id a (percent-encoded) path segment names, or None."""
    try:
        chunk_id = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        return None  # not even text: certainly not a hex id
    return chunk_id.upper() if chunkmeta.valid_chunk_id(chunk_id) else None


def _wanted_range(request, size):
    """(status, headers, offset, length) a GET of ``size`` bytes answers with: 200 and
    the whole, or 206 and the Range's bytes; None when the Range is unsatisfiable."""
    range_value = request.headers.get("range")
    if range_value:
        wanted = parse_range(range_value, size)
        if wanted is UNSATISFIABLE:
            return None
        if wanted is not None and not (wanted[0] == 0 and wanted[1] == 0):
            offset, length = wanted
            return 206, [("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}")], \
                offset, length
    return 200, (), 0, size


def bad_id_reply():  # a fresh Reply each time: replies are mutated when sent
    return Reply(400, body=b"invalid chunk id\n", reason="invalid chunk id")


class Upload:
    """A chunk PUT in progress: what the connection streams the body into.

    The pending file is created by ``open()``, which the connection calls on an I/O
    thread together with the first pump of the body; body bytes that came with the
    request head wait in memory (bounded) until then."""

    direct = True  # the body can be pumped socket -> file through ``open()``'s fd

    def __init__(self, app, put_meta, writer, hasher, exchange):
        self.app = app
        self.meta = put_meta
        self.writer = writer
        self.hasher = hasher
        self.exchange = exchange
        self._early = bytearray()  # body bytes received before the file exists

    def open(self):
        """Create the pending file (if not yet) and flush the early bytes; -> its fd.
        May run on an I/O thread; raises StorageError (ChunkExists, NoSpace, ...)."""
        writer = self.writer
        if not writer.opened:
            writer.open()
            if self._early:
                early, self._early = self._early, None
                self._store(early)
        return writer.fd

    def _store(self, data):
        """Hash and write body bytes once the file exists."""
        self.writer.write(data, self.hasher)

    def feed(self, data):
        if self.writer.opened:
            self._store(data)
        elif len(self._early) + len(data) <= EARLY_BYTES:
            self._early += data
        else:
            self.open()
            self._store(data)

    def finish(self, trailers, received):
        trailers = [(n.decode("latin-1").lower() if isinstance(n, bytes) else n,
                     v.decode("latin-1") if isinstance(v, bytes) else v)
                    for n, v in trailers]
        try:
            self.open()  # a body that never reached a pump (empty, or all early bytes)
            # not hashed (checksum off|smart): meta.finish keeps the announced hash
            hasher = self.hasher
            computed = hasher.hexdigest().upper() if hasher is not None else None
            attrs = self.meta.finish(trailers, computed, received)
            self.writer.set_attrs(attrs)
            self.writer.commit()
        except StorageError as exc:
            self.writer.abort()
            return error_reply(exc)
        if self.meta.non_optimal:
            try:
                self.app.repo.mark_non_optimal(self.meta.chunk_id)  # existing: ignored
            except StorageError as exc:
                log.error("non-optimal placement mark for %s failed: %s",
                          self.meta.chunk_id, exc)
        headers = [("X-Oio-Chunk-Meta-Chunk-Hash", self.meta.chunk_hash),
                   ("X-Oio-Chunk-Meta-Chunk-Size", self.meta.chunk_size)]
        refusal = self.app.chunk_created(self.meta, self.exchange)
        if refusal is not None:
            return refusal
        return Reply(201, headers)

    def fail(self, exc):
        self.writer.abort()
        if isinstance(exc, OSError):
            exc = map_os_error(exc, "write")
        return error_reply(exc)

    def abort(self):
        self.writer.abort()


class CompressedUpload(Upload):
    """A PUT under ``compression zlib``: the plain body is hashed, then compressed into
    one zlib stream on its way to the file. The connection cannot pump such a body
    socket -> file, so it feeds it (on an I/O thread when it has one)."""

    direct = False

    def __init__(self, app, put_meta, writer, hasher, exchange):
        super().__init__(app, put_meta, writer, hasher, exchange)
        self.compressor = compress.Compressor()
        put_meta.compression = compress.ZLIB

    def _store(self, data):
        if self.hasher is not None:
            self.hasher.update(data)
        packed = self.compressor.compress(data)
        if packed:
            self.writer.write(packed, None)

    def finish(self, trailers, received):
        try:
            self.open()
            self.writer.write(self.compressor.flush(), None)
        except StorageError as exc:
            self.writer.abort()
            return error_reply(exc)
        return super().finish(trailers, received)


class RawxApp(AdminRoutes, SendRoutes):
    def __init__(self, config, repo, stats, volume=None, events=None, admin=None,
                 access=None, feeds=None):
        self.config = config
        self.repo = repo
        self.stats = stats
        self.volume = volume  # liveness probe state, or None
        self.events = events
        self.feeds = feeds  # storage.feeds.FeedRecorder, None without feeds
        self.admin = admin  # storage.auth.AdminAuth, None without admin_htdigest
        self.access = access  # storage.accesslog.AccessLog, None for access_log off
        hosts = {config.listen}
        if config.tls_enabled:
            hosts.add(config.tls_listen)
        if config.service_id:
            hosts.add(config.service_id)
        self.allowed_hosts = hosts
        # SCSP clients name the node by its bare address in admin requests (SEND)
        self.bare_hosts = {config.listen_host}
        if config.tls_enabled:
            self.bare_hosts.add(config.tls_host)
        # listening on a wildcard address, any Host naming one of our ports is ours
        ports = set()
        if config.listen_host in ("0.0.0.0", "::"):
            ports.add(str(config.listen_port))
            if config.tls_enabled:
                ports.add(str(config.tls_port))
        self.wildcard_ports = frozenset(ports)
        self.pid = os.getpid()
        self._meta_cache = {}
        self._handlers = {"put": self._chunk_put, "get": self._chunk_get,
                          "head": self._chunk_head, "del": self._chunk_del,
                          "post": self._chunk_post, "copy": self._chunk_copy}
        self.fast_get = self._get_core(repo, stats)
        if self.fast_get is not None and access is not None:
            self.fast_get.log_to(access.buffer, self.pid)  # it logs its own replies

    def _get_core(self, repo, stats):
        """The compiled GET/HEAD path (``_fastpath.getcore``) for this worker, or None
        (``STORAGE_NODE_GET_CORE=off``, or counters it cannot add to)."""
        layout = getattr(repo, "layout", None)
        values = getattr(stats, "values", None)
        if os.environ.get("STORAGE_NODE_GET_CORE", "on") == "off" or layout is None \
                or values is None:
            return None
        return getcore.GetCore(layout, self.allowed_hosts, values,
                               dict(INDEX, base=stats.base, row=ROW), SMALL_FILE,
                               META_CACHE_SIZE, wildcard_ports=self.wildcard_ports)

    @property
    def healthy(self):
        """False while the liveness probe says the volume fails (every route answers
        503 then, which the compiled GET path leaves to ``begin``)."""
        return self.volume is None or self.volume.ok

    # ---- entry point ---------------------------------------------------------------
    def begin(self, request, conn):
        exchange = conn.exchange
        reqid = request.headers.get("x-oio-req-id") or request.headers.get("x-trans-id", "")
        exchange.reqid = reqid[:63]
        host = request.headers.get("host", "")
        if host and host not in self.allowed_hosts and not self._wildcard_ok(host) \
                and not (request.method == "SEND" and host in self.bare_hosts):
            exchange.kind = "other"
            self.stats.start("other")
            return self._wrong_host(host)
        path = "/" + request.path.lstrip("/")
        if path in ("/info", "/stat", "/list"):
            kind = "info" if path == "/info" else "stat" if path == "/stat" else "raw"
            exchange.kind = kind
            self.stats.start(kind)
            return self._service_route(path, request)
        if path.startswith("/update/"):
            exchange.kind = "raw"
            self.stats.start("raw")
            return self._update_route(path[len("/update/"):], request, exchange)
        kind = CHUNK_METHODS.get(request.method, "other")
        exchange.kind = kind
        self.stats.start(kind)
        refusal = self._unavailable()
        if refusal is not None:
            return refusal
        chunk_id = parse_chunk_id(path[1:])
        if chunk_id is None:
            return bad_id_reply()
        handler = self._handlers.get(kind)
        if handler is None and request.method == "SEND":
            handler = self._chunk_send
        if handler is None:
            return Reply(405, [("Allow", ALLOW)],
                         body=b"method not allowed\n", reason="method not allowed")
        try:
            return handler(chunk_id, request, exchange)
        except StorageError as exc:
            return error_reply(exc)

    def _wildcard_ok(self, host):
        return host.rpartition(":")[2] in self.wildcard_ports

    def _wrong_host(self, host):
        """418, oio-rawx's answer to a request meant for another service (a client
        still using an address that moved), with a one-line reason as the 400s have."""
        reason = (f"wrong Host {host[:WRONG_HOST_ECHO]}: this service is "
                  f"{', '.join(sorted(self.allowed_hosts))}")
        return Reply(418, body=(reason + "\n").encode("utf-8", "replace"), reason=reason)

    # ---- chunks --------------------------------------------------------------------
    def _chunk_put(self, chunk_id, request, exchange):
        put_meta = chunkmeta.PutMeta(chunk_id, request.headers)
        exchange.account = put_meta.fullpath.account
        exchange.bucket = put_meta.fullpath.container
        config = self.config
        compressed = config.compression != "off"
        # a compressed chunk's file size is not the body's: no size hint to fallocate
        writer = self.repo.writer(chunk_id, None if compressed else request.content_length)
        hasher = None
        mode = config.checksum
        # checksum smart skips EC fragments (they carry their own checksums). The
        # reference only tests the storage policy for "ec/", which real EC policy names
        # ("EC63") never match; an EC chunk method ("ec/algo=...") counts too. A body is
        # hashed anyway when the client announced no hash at all (no header, no declared
        # trailer): no chunk is ever stored without a hash (a HEAD would answer 500).
        ec_fragment = put_meta.policy.startswith("ec/") or put_meta.method.is_ec
        if mode == "always" or (mode == "smart" and not ec_fragment) \
                or not put_meta.announces_hash():
            hasher = chunkmeta.new_hasher(put_meta.method.algo)
        if compressed:
            return CompressedUpload(self, put_meta, writer, hasher, exchange)
        return Upload(self, put_meta, writer, hasher, exchange)

    def _open(self, chunk_id, exchange):
        """Open a chunk; -> (reader, StoredMeta, encoded reply header lines).

        Metadata is cached per (id, inode, ctime): any data or xattr change moves the
        ctime, and every request fstat()s the open chunk. ctime ticks are coarse, so only
        a chunk whose ctime is over a second old is cached: a change in the same tick as
        a cached read cannot exist (git's "racy" rule)."""
        reader = self.repo.reader(chunk_id)
        key = (chunk_id, reader.key, reader.ctime_ns)
        entry = self._meta_cache.get(key)
        if entry is None:
            try:
                stored = chunkmeta.StoredMeta(chunk_id, reader.read_attrs())
            except BaseException:
                reader.close()
                raise
            headers = stored.reply_headers()
            headers.append(("Last-Modified", last_modified(reader.mtime)))
            entry = (stored, encode_fields(headers))
            if time.time() - reader.ctime > RACY_SECONDS:
                if len(self._meta_cache) >= META_CACHE_SIZE:
                    self._meta_cache.clear()
                self._meta_cache[key] = entry
                self._remember(chunk_id, reader, entry)
        else:
            self._remember(chunk_id, reader, entry)  # the compiled cache may have dropped it
        exchange.account = entry[0].account
        exchange.bucket = entry[0].bucket
        return reader, entry[0], entry[1]

    def _remember(self, chunk_id, reader, entry):
        """Let the compiled GET path answer this version of a plain chunk."""
        stored, fields = entry
        if self.fast_get is None or stored.compression:
            return
        self.fast_get.remember(chunk_id, reader.key[0], reader.key[1], reader.ctime_ns,
                               stored.expected_size, fields, bool(stored.get("chunk_hash")),
                               stored.account, stored.bucket)

    @staticmethod
    def _size_ok(reader, stored):
        expected = stored.expected_size
        return expected is None or expected == reader.size

    def _chunk_get(self, chunk_id, request, exchange):
        reader, stored, fields = self._open(chunk_id, exchange)
        if stored.compression:
            return self._compressed_get(reader, stored, fields, request)
        try:
            if not self._size_ok(reader, stored):
                reader.close()
                return Reply(412, body=b"chunk size mismatch\n", reason="chunk size mismatch")
            wanted = _wanted_range(request, reader.size)
            if wanted is None:
                reader.close()
                return Reply(416, reason="range not satisfiable")
            status, headers, offset, length = wanted
        except BaseException:
            reader.close()
            raise
        return Reply(status, headers, file=FileBody(reader.fd, offset, length, reader.close),
                     fields=fields)

    def _compressed_get(self, reader, stored, fields, request):
        """GET of a compressed chunk: Range and lengths count decompressed bytes; the
        body is inflated piece by piece as the socket takes it."""
        try:
            size, wbits = self._compressed_info(stored)
            wanted = _wanted_range(request, size)
            if wanted is None:
                reader.close()
                return Reply(416, reason="range not satisfiable")
            status, headers, offset, length = wanted
        except compress.UnsupportedCompression as exc:
            reader.close()
            return _one_line_500(str(exc))
        except BaseException:
            reader.close()
            raise
        if length == 0:
            reader.close()
            return Reply(status, headers, fields=fields)
        inflater = compress.Inflater(reader.fd, wbits, offset, length,
                                     to_end=offset + length == size)
        reply = Reply(status, headers, file=StreamBody(inflater.read, length, reader.close),
                      fields=fields)
        if offset < SKIP_INLINE:
            return reply

        def skip():  # inflating up to a far offset is blocking work: an I/O thread's
            try:
                inflater.read(0)
            except OSError as exc:
                reader.close()
                return _one_line_500(f"cannot read the compressed chunk: {exc.strerror}")
            return reply
        return BlockingReply(skip)

    @staticmethod
    def _compressed_info(stored):
        """(uncompressed size, zlib wbits) of a compressed chunk; raises
        UnsupportedCompression for a codec we cannot read or a size we cannot trust."""
        wbits = compress.wbits_for(stored.compression)
        try:
            size = int(stored.get("chunk_size"))
        except ValueError:
            size = -1
        if size < 0:
            raise compress.UnsupportedCompression("compressed chunk without a valid size")
        return size, wbits

    def _chunk_head(self, chunk_id, request, exchange):
        reader, stored, fields = self._open(chunk_id, exchange)
        verbose = self.feeds is not None and _verbose(request.query)
        if request.headers.get("x-oio-check-hash", "").lower() == "true":
            # hashing a whole chunk is blocking work: an I/O thread's, not the loop's
            return BlockingReply(lambda: self._with_feeds(
                self._head(reader, stored, fields, request, True), stored, verbose))
        return self._with_feeds(self._head(reader, stored, fields, request, False), stored,
                                verbose)

    def _with_feeds(self, reply, stored, verbose):
        """A verbose HEAD's 200 with the chunk's Feed-<id>-Status headers."""
        if verbose and reply.status == 200:
            reply.headers = list(reply.headers) + self.feeds.status_headers(stored)
        return reply

    def _head(self, reader, stored, fields, request, check_hash):
        try:
            stored_hash = stored.get("chunk_hash")
            if not stored_hash:
                return Reply(500, body=b"chunk has no stored hash\n", reason="no stored hash")
            size = reader.size
            wbits = None
            if stored.compression:
                try:
                    size, wbits = self._compressed_info(stored)
                except compress.UnsupportedCompression as exc:
                    return _one_line_500(str(exc))
            elif not self._size_ok(reader, stored):
                return Reply(412, reason="chunk size mismatch")
            if check_hash:
                expected = request.headers.get(chunkmeta.PREFIX + "chunk-hash") or stored_hash
                algo = chunkmeta.hash_algo(expected)
                try:
                    if wbits is None:
                        actual = streamio.hash_file(reader.fd, algo)
                    else:
                        hasher = chunkmeta.new_hasher(algo)
                        if compress.hash_inflated(reader.fd, wbits, hasher) != size:
                            return Reply(412, reason="decompressed size mismatch")
                        actual = hasher.hexdigest()
                except OSError:
                    return Reply(412, reason="I/O error while hashing")
                if actual.upper() != expected.upper():
                    return Reply(412, reason="chunk hash mismatch")
            return Reply(200, ACCEPT_RANGES, length=size, fields=fields)
        finally:
            reader.close()

    def _chunk_del(self, chunk_id, request, exchange):
        reader, stored, _ = self._open(chunk_id, exchange)
        reader.close()
        if self.feeds is not None:
            # before the unlink: a node killed right after it still owes the delete
            # (delivery waits until the chunk is really gone here)
            try:
                self.feeds.record_deleted(stored, exchange.reqid)
            except QueueError as exc:
                log.error("DELETE %s refused: %s", chunk_id, exc)
                return Reply(503, body=b"cannot queue the delete for the feeds\n",
                             reason="feeds queue unavailable")
        own = chunkmeta.XATTR_FULLPATH + chunk_id if self.config.shallow_copy else None
        self.repo.delete(chunk_id, own_attr=own)
        if self.events is not None:
            self.events.emit("storage.chunk.deleted", exchange.reqid,
                             stored.event_data(self.config.listen, self.config.service_id))
        return Reply(204)

    def chunk_created(self, put_meta, exchange):
        """A chunk was just stored (PUT): its event, and its rows in the feeds queue,
        before the 201 goes out. -> None, or the 503 to answer when the queue could
        not take it (the chunk is removed again: a 201 is never sent for a chunk the
        feeds would miss)."""
        if self.events is None and self.feeds is None:
            return None
        stored = chunkmeta.StoredMeta(put_meta.chunk_id, put_meta.xattrs())
        return self.stored_new(stored, exchange.reqid)

    def stored_new(self, stored, reqid):
        """Feeds and event of a new chunk (``stored``: its StoredMeta): see
        chunk_created; COPY shares it."""
        if self.feeds is not None:
            try:
                self.feeds.record_new(stored, reqid)
            except QueueError as exc:
                log.error("%s not stored: %s", stored.chunk_id, exc)
                try:
                    self.repo.delete(stored.chunk_id,
                                     own_attr=chunkmeta.XATTR_FULLPATH + stored.chunk_id)
                except StorageError as exc2:
                    log.error("cannot remove %s again: %s", stored.chunk_id, exc2)
                return Reply(503, body=b"cannot queue the chunk for the feeds\n",
                             reason="feeds queue unavailable")
        if self.events is not None:
            self.events.emit("storage.chunk.new", reqid,
                             stored.event_data(self.config.listen, self.config.service_id))
        return None

    # ---- service routes ------------------------------------------------------------
    def _unavailable(self):
        """The 503 reply while the liveness probe says the volume fails, else None."""
        if not self.healthy:
            reason = self.volume.reason
            return Reply(503, body=(reason + "\n").encode(), reason=reason)
        return None

    def _service_route(self, path, request):
        refusal = self._unavailable()
        if refusal is not None:
            return refusal
        if request.method not in ("GET", "HEAD"):
            return Reply(405, [("Allow", "GET, HEAD")], body=b"method not allowed\n",
                         reason="method not allowed")
        if path == "/info":
            return self._info()
        if path == "/stat":
            if "format=prometheus" in request.query.split("&"):
                return self._stat_prometheus()
            return self._stat()
        if request.chunked or request.content_length:
            return BufferedBody(self._list)  # parameters come as a small JSON body
        try:
            return self._list(b"")
        except StorageError as exc:
            return error_reply(exc)

    def _update_route(self, raw_id, request, exchange):
        refusal = self._unavailable()
        if refusal is not None:
            return refusal
        if request.method != "GET":
            return Reply(405, [("Allow", "GET")], body=b"method not allowed\n",
                         reason="method not allowed")
        chunk_id = parse_chunk_id(raw_id)
        if chunk_id is None:
            return bad_id_reply()
        try:
            return self._update(chunk_id, request, exchange)
        except StorageError as exc:
            return error_reply(exc)

    def _info(self):
        cfg = self.config
        lines = [f"namespace {cfg.namespace}", f"path {cfg.docroot}"]
        if cfg.service_id:
            lines.append(f"service_id {cfg.service_id}")
        lines += [f"hash_depth {cfg.hash_depth}", f"hash_width {cfg.hash_width}"]
        return Reply(200, [("Content-Type", "text/plain")],
                     body=("\n".join(lines) + "\n").encode())

    def _stat(self):
        totals = self.stats.shared.totals()
        lines = [f"counter {name} {totals[name]}" for name in COUNTERS]
        lines.append(f"config volume {self.config.docroot}")
        lines.append(f"config service_id {self.config.service_id}")
        lines += [f"gauge {name} {value}" for name, value in self._gauges(totals).items()]
        if self.feeds is not None:
            lines += self.feeds.stat_lines()
        return Reply(200, [("Content-Type", "text/plain")],
                     body=("\n".join(lines) + "\n").encode())

    def _gauges(self, totals):
        """{volume.free_bytes, volume.used_bytes, connections}: the volume's
        filesystem (bytes; 0 when statvfs fails) and the node's open connections."""
        try:
            vfs = os.statvfs(self.config.docroot)
            free = vfs.f_bavail * vfs.f_frsize
            used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        except OSError:
            free = used = 0
        return {"volume.free_bytes": free, "volume.used_bytes": used,
                "connections": totals["connections"]}

    def _stat_prometheus(self):
        totals = self.stats.shared.totals()
        text = metrics.render(totals, self._gauges(totals), self.config,
                              self.feeds.counts() if self.feeds is not None else ())
        return Reply(200, [("Content-Type", metrics.CONTENT_TYPE)], body=text.encode())

    # ---- accounting ----------------------------------------------------------------
    def record(self, exchange, conn):
        """Counters and the access log line for a finished (or abandoned) exchange."""
        now = time.monotonic()
        micros = int((now - exchange.started) * 1e6)
        kind = exchange.kind
        exchange.bytes_out = max(0, exchange.bytes_out)  # a head cut short counts nothing
        self.stats.finish(kind, exchange.status, micros, exchange.bytes_in,
                          exchange.bytes_out)
        if self.access is not None:
            self.log_access(exchange, conn, micros)

    def log_access(self, exchange, conn, micros):
        """The access log line of a finished exchange (counted already)."""
        request = exchange.request
        ttfb = int((exchange.ttfb - exchange.started) * 1e6) if exchange.ttfb else micros
        put, get, delete = self.stats.inflight()
        method = request.method if request else "-"
        path = request.path if request else "-"
        host = request.headers.get("host") or "-" if request else "-"
        self.access.write(accesslog.format_line(
            self.pid, host, conn.peer, method, exchange.status, micros, exchange.bytes_out,
            exchange.bytes_in, exchange.reqid, path, ttfb, put, get, delete,
            exchange.account, exchange.bucket))


def _verbose(query):
    """Whether a query string asks for ``verbose`` (``verbose``, ``verbose=1``...)."""
    values = query_args(query).get("verbose")
    return values is not None and values[0].lower() not in ("0", "false", "no")
