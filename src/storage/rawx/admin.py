"""RAWX routes beyond plain chunk I/O (spec rawx.md sections 5-7): POST (ext metadata,
non-optimal placement), COPY (hard-link shallow copy), the legacy GET /update/{ID}, and
GET /list. Mixed into RawxApp; errors are StorageError subclasses mapped in one table."""
import json
from urllib.parse import urlsplit

from storage.errors import BadRequest, ChunkExists, StorageError
from storage.http.reply import Reply
from storage.rawx import meta as chunkmeta

LIST_DEFAULT = 1000
LIST_MAX = 100_000
SMALL_BODY_LIMIT = 64 << 10


class BodyTooLarge(StorageError):
    pass


class BufferedBody:
    """A small request body (a JSON document) gathered in memory, at most ``limit``
    bytes, then handed to ``handler(bytes) -> Reply``."""

    direct = False  # not a file: the connection feeds it piece by piece
    hasher = None

    def __init__(self, handler, limit=SMALL_BODY_LIMIT):
        self.handler = handler
        self.limit = limit
        self.data = bytearray()

    def feed(self, data):
        if len(self.data) + len(data) > self.limit:
            raise BodyTooLarge(f"request body over {self.limit} bytes")
        self.data += data

    def finish(self, trailers, received):
        try:
            return self.handler(bytes(self.data))
        except StorageError as exc:
            from storage.rawx.app import error_reply
            return error_reply(exc)

    def fail(self, exc):
        if isinstance(exc, BodyTooLarge):
            return Reply(413, body=f"{exc}\n".encode(), reason=str(exc))
        return Reply(500, body=b"internal error\n", reason="internal error")

    def abort(self):
        self.data = bytearray()


class AdminRoutes:
    """POST, COPY, /update and /list for RawxApp (uses self.repo, self.config, ...)."""

    # ---- POST /{ID} ------------------------------------------------------------
    def _chunk_post(self, chunk_id, request, exchange):
        reader, stored, _ = self._open(chunk_id, exchange)
        reader.close()
        ext = chunkmeta.ext_attrs(request.fields)
        if ext:
            self.repo.set_attrs(chunk_id, ext)
        flag = request.headers.get(chunkmeta.PREFIX + "non-optimal-placement", "")
        if flag.lower() in chunkmeta.TRUE_WORDS:
            if not self.repo.mark_non_optimal(chunk_id):
                raise ChunkExists(f"{chunk_id} is already marked non-optimal")
        return Reply(200)

    # ---- COPY /{ID} (shallow copy) ------------------------------------------------
    def _chunk_copy(self, chunk_id, request, exchange):
        if not self.config.shallow_copy:
            return Reply(405, [("Allow", "GET, HEAD, PUT, DELETE, POST")],
                         body=b"shallow copy is off\n", reason="shallow copy is off")
        destination = request.headers.get("destination", "")
        if not destination:
            raise BadRequest("missing Destination header")
        parts = urlsplit(destination)
        if parts.netloc and parts.netloc not in self.allowed_hosts:
            return Reply(403, body=b"destination is another server\n",
                         reason="destination is another server")
        dst_id = parts.path.lstrip("/")
        if not chunkmeta.valid_chunk_id(dst_id):
            raise BadRequest("invalid destination chunk id")
        dst_id = dst_id.upper()
        if dst_id == chunk_id:
            return Reply(403, body=b"destination is the source\n", reason="copy onto itself")
        raw = request.headers.get(chunkmeta.PREFIX + "full-path", "")
        if not raw:
            raise BadRequest("missing header X-oio-Chunk-Meta-Full-Path")
        fullpath = chunkmeta.FullPath.parse(raw)
        self.repo.link(chunk_id, dst_id)
        self.repo.set_attrs(dst_id, {chunkmeta.XATTR_FULLPATH + dst_id:
                                     fullpath.raw.encode("latin-1")})
        if self.events is not None or self.feeds is not None:
            reader = self.repo.reader(dst_id)
            try:
                stored = chunkmeta.StoredMeta(dst_id, reader.read_attrs())
            finally:
                reader.close()
            refusal = self.stored_new(stored, exchange.reqid)  # feeds, then the event
            if refusal is not None:
                return refusal
        return Reply(201)

    # ---- GET /update/{ID} (legacy) ---------------------------------------------------
    def _update(self, chunk_id, request, exchange):
        reader, stored, _ = self._open(chunk_id, exchange)
        reader.close()
        put_meta = chunkmeta.PutMeta(chunk_id, request.headers)
        # the body is not read again: keep the stored hash and size unless given
        put_meta.chunk_hash = put_meta.chunk_hash or stored.get("chunk_hash")
        put_meta.chunk_size = put_meta.chunk_size or stored.get("chunk_size")
        self.repo.set_attrs(chunk_id, put_meta.xattrs())
        return Reply(200)

    # ---- GET /list ---------------------------------------------------------------
    def _list(self, body):
        start_after, wanted = "", LIST_DEFAULT
        if body.strip():
            try:
                params = json.loads(body)
            except ValueError:
                raise BadRequest("list parameters are not JSON") from None
            if not isinstance(params, dict):
                raise BadRequest("list parameters must be a JSON object")
            start_after = params.get("start_after") or ""
            wanted = params.get("min_to_return", LIST_DEFAULT)
            if not isinstance(start_after, str):
                raise BadRequest("start_after must be a string")
            if not isinstance(wanted, int) or isinstance(wanted, bool) or \
                    not 1 <= wanted <= LIST_MAX:
                raise BadRequest(f"min_to_return must be an integer in 1..{LIST_MAX}")
        ids, truncated, marker = self.repo.list_chunks(start_after.upper(), wanted)
        doc = {"chunks": [{"chunk_id": i} for i in ids], "is_truncated": truncated,
               "marker": marker}
        return Reply(200, [("Content-Type", "application/json")],
                     body=json.dumps(doc).encode())
