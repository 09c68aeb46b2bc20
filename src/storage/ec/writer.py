"""Streaming writer of erasure-coded objects over k + m RAWX nodes.

The input is read in 1 MiB segments into one reused buffer; each segment is
encoded with ``Codec.encode_into`` into a set of k + m fragment buffers
taken from a small pool; fragment i goes to uploader thread i, which appends
it to chunk i's PUT as one HTTP chunk while hashing it. The uploaders run in
parallel (socket sends and MD5 release the GIL) while the main thread reads
and encodes the next segment; a buffer set returns to the pool once all
uploaders have sent their fragment. Memory: the pool (3 x 9 x 171 KiB) plus
one input segment, whatever the object size.

Default chunk size: 100 MiB of data per chunk (OpenIO's usual ns.chunk_size),
so a metachunk holds up to 600 MiB with k=6 and each chunk file is about
100 MiB (data) or its parity twin: big enough that per-chunk overheads
(a PUT, an inode, a meta2 record) stay small, small enough that a rebuild
moves a bounded amount and a node failure spreads over many chunks.
"""
import hashlib
import io
import logging
import os
import queue
import secrets
import stat
import threading
import time

from storage.ec import description as descmod
from storage.ec import placement
from storage.ec.codec import Codec
from storage.ec.header import DEFAULT_LIBRARY_VERSION
from storage.ec.layout import SEGMENT_SIZE, Layout
from storage.rawxclient import META, RawxClient, RawxError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 100 * (1 << 20)
POOL_DEPTH = 3              # fragment buffer sets in flight
_POLL = 0.5                 # seconds between checks for a failed uploader


class WriteError(Exception):
    """The object could not be stored; nothing of it should be relied on."""


def new_chunk_id():
    return secrets.token_hex(32).upper()


def new_content_id():
    return secrets.token_hex(16).upper()


class _BufferSet:
    """k + m fragment buffers, handed back to the pool once every uploader
    has released them."""

    def __init__(self, count, size, pool):
        self.views = [memoryview(bytearray(size)) for _ in range(count)]
        self._pool = pool
        self._lock = threading.Lock()
        self._pending = 0

    def arm(self, count):
        self._pending = count

    def release(self):
        with self._lock:
            self._pending -= 1
            done = self._pending == 0
        if done:
            self._pool.put(self)


class _Uploader(threading.Thread):
    """Sends fragment ``index`` of every segment to its chunk's PUT."""

    def __init__(self, index, timeout):
        super().__init__(name=f"ec-upload-{index}", daemon=True)
        self.index = index
        self.timeout = timeout
        self.inbox = queue.Queue()
        self.clients = {}
        self.error = None
        self.done = {}          # metachunk number -> (chunk hash, chunk size)
        self._upload = None
        self._md5 = None
        self._size = 0

    def run(self):
        try:
            while True:
                item = self.inbox.get()
                kind = item[0]
                if kind == "stop":
                    break
                if kind == "data":
                    try:
                        if self.error is None:
                            self._send(item[1].views[self.index][:item[2]])
                    except Exception as exc:   # noqa: BLE001 - reported to the main thread
                        self._failed(exc)
                    finally:
                        item[1].release()
                    continue
                if self.error is not None:
                    continue
                try:
                    if kind == "begin":
                        self._begin(*item[1:])
                    elif kind == "end":
                        self._end(*item[1:])
                except Exception as exc:       # noqa: BLE001
                    self._failed(exc)
        finally:
            if self._upload is not None:
                self._upload.abort()
            for client in self.clients.values():
                client.close()

    def _failed(self, exc):
        self.error = exc
        if self._upload is not None:
            self._upload.abort()
            self._upload = None

    def _begin(self, number, node, chunk_id, headers):
        client = self.clients.get(node)
        if client is None:
            client = self.clients[node] = RawxClient(node, timeout=self.timeout)
        self._upload = client.put(chunk_id, headers, descmod.CHUNK_TRAILERS)
        self._md5 = hashlib.md5()
        self._size = 0

    def _send(self, view):
        self._md5.update(view)
        self._upload.write(view)
        self._size += view.nbytes

    def _end(self, number, mc_trailers):
        chunk_hash = self._md5.hexdigest().upper()
        trailers = dict(mc_trailers)
        trailers[META + "Chunk-Hash"] = chunk_hash
        trailers[META + "Chunk-Size"] = str(self._size)
        reply = self._upload.finish(trailers)
        self._upload = None
        stored = reply.get("x-oio-chunk-meta-chunk-hash", chunk_hash).upper()
        if stored != chunk_hash:
            raise RawxError(f"chunk {number}.{self.index}: node stored hash {stored}, "
                            f"sent {chunk_hash}")
        self.done[number] = (chunk_hash, self._size)


def _known_size(stream):
    """Bytes left in a regular file stream, or None."""
    try:
        st = os.fstat(stream.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return st.st_size - stream.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _read_full(stream, buf):
    """Fill buf from the stream; returns the bytes read (short only at EOF)."""
    view = memoryview(buf)
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = stream.read(len(view) - got)
            n = len(data)
            view[got:got + n] = data
        if not n:
            break
        got += n
    return got


def put(stream, nodes, *, path, account="acct", container="cont", version=None,
        content_id=None, k=6, m=3, chunk_size=DEFAULT_CHUNK_SIZE, storage_policy=None,
        chksum_type="none", library_version=DEFAULT_LIBRARY_VERSION, timeout=30.0,
        progress=None, size=None):
    """Store the bytes of a binary stream as an EC object on k + m of the
    ``nodes`` (URLs) chosen per metachunk by rendezvous hashing; returns its
    description (a dict, see storage.ec.description). ``chunk_size`` is the
    data bytes per chunk (metachunk = k x chunk_size, whole MiB);
    ``progress(nbytes)`` is called after each segment; ``size`` (bytes the
    stream will give, found with fstat for a regular file) lets a
    one-metachunk object skip hashing its bytes twice. WriteError on
    failure (chunks already stored are deleted, best effort)."""
    layout = Layout(k, m, SEGMENT_SIZE)
    codec = Codec(k, m, chksum_type=chksum_type, library_version=library_version)
    limit = layout.metachunk_limit(chunk_size)
    if len({placement.normalize_url(n) for n in nodes}) < layout.n:
        raise WriteError(f"need {layout.n} distinct nodes, got {len(set(nodes))}")
    content_id = content_id or new_content_id()
    version = int(time.time() * 1_000_000) if version is None else int(version)
    desc = {
        "format": descmod.FORMAT, "account": account, "container": container, "path": path,
        "version": version, "content_id": content_id,
        "full_path": descmod.full_path(account, container, path, version, content_id),
        "size": 0, "md5": None, "segment_size": SEGMENT_SIZE, "k": k, "m": m,
        "algo": descmod.ALGO, "chunk_method": descmod.chunk_method(k, m),
        "storage_policy": storage_policy or f"EC{k}+{m}", "chksum_type": chksum_type,
        "metachunk_limit": limit, "metachunks": [],
    }
    pool = queue.Queue()
    for _ in range(POOL_DEPTH):
        pool.put(_BufferSet(layout.n, layout.full_fragment, pool))
    uploaders = [_Uploader(i, timeout) for i in range(layout.n)]
    for u in uploaders:
        u.start()
    segment = bytearray(SEGMENT_SIZE)
    if size is None:
        size = _known_size(stream)
    # One metachunk: its MD5 is the object's, no need to hash twice.
    obj_md5 = hashlib.md5() if size is None or size > limit else None
    ok = False
    try:
        seg_len = _read_full(stream, segment)
        number = 0
        while True:
            mc = _write_metachunk(desc, number, stream, segment, seg_len, limit, layout, codec,
                                  nodes, pool, uploaders, obj_md5, progress)
            seg_len = mc.pop("_next")
            desc["metachunks"].append(mc)
            desc["size"] += mc["size"]
            number += 1
            if not seg_len:
                break
        for u in uploaders:
            u.inbox.put(("stop",))
        for u in uploaders:
            u.join()
        _raise_failed(uploaders)
        for mc in desc["metachunks"]:
            for c in mc["chunks"]:
                c["hash"], c["size"] = uploaders[c["index"]].done[mc["pos"]]
                if c["size"] != mc["chunk_size"]:
                    raise WriteError(f"chunk {c['pos']}: sent {c['size']} bytes, layout says "
                                     f"{mc['chunk_size']}")
        if obj_md5 is None:
            if len(desc["metachunks"]) != 1:
                raise WriteError(f"the stream gave more than the {size} bytes announced")
            desc["md5"] = desc["metachunks"][0]["hash"]
        else:
            desc["md5"] = obj_md5.hexdigest().upper()
        ok = True
        return desc
    finally:
        if not ok:
            for u in uploaders:
                u.inbox.put(("stop",))
            for u in uploaders:
                u.join(timeout + 5)
            _cleanup(desc, uploaders, timeout)


def _write_metachunk(desc, number, stream, segment, seg_len, limit, layout, codec, nodes,
                     pool, uploaders, obj_md5, progress):
    targets = placement.choose(nodes, placement.metachunk_key(desc["content_id"], number),
                               layout.n)
    chunks = []
    for i, node in enumerate(targets):
        cid = new_chunk_id()
        pos = f"{number}.{i}"
        chunks.append({"index": i, "pos": pos, "url": f"{node}/{cid}", "id": cid,
                       "size": None, "hash": None})
        uploaders[i].inbox.put(("begin", number, node, cid, descmod.chunk_headers(desc, pos, cid)))
    mc_md5 = hashlib.md5()
    size = 0
    while seg_len and size < limit:
        data = memoryview(segment)[:seg_len]
        mc_md5.update(data)
        if obj_md5 is not None:
            obj_md5.update(data)
        bufs = _take(pool, uploaders)
        fsize = codec.encode_into(data, bufs.views)
        bufs.arm(layout.n)
        for u in uploaders:
            u.inbox.put(("data", bufs, fsize))
        size += seg_len
        if progress is not None:
            progress(seg_len)
        seg_len = _read_full(stream, segment) if seg_len == len(segment) else 0
    mc_hash = mc_md5.hexdigest().upper()
    for u in uploaders:
        u.inbox.put(("end", number, descmod.metachunk_trailers(size, mc_hash)))
    return {"pos": number, "offset": desc["size"], "size": size, "hash": mc_hash,
            "chunk_size": layout.chunk_size(size), "chunks": chunks, "_next": seg_len}


def _raise_failed(uploaders):
    failed = [u for u in uploaders if u.error is not None]
    if failed:
        detail = "; ".join(f"chunk {u.index}: {u.error}" for u in failed)
        raise WriteError(f"{len(failed)} chunk upload(s) failed: {detail}")


def _take(pool, uploaders):
    """A free buffer set; WriteError as soon as an uploader has failed."""
    while True:
        _raise_failed(uploaders)
        try:
            return pool.get(timeout=_POLL)
        except queue.Empty:
            if not any(u.is_alive() for u in uploaders):
                raise WriteError("every uploader stopped") from None


def _cleanup(desc, uploaders, timeout):
    """Delete the chunks that were stored before the failure (best effort)."""
    for mc in desc["metachunks"]:
        for c in mc["chunks"]:
            if mc["pos"] not in uploaders[c["index"]].done:
                continue
            node = c["url"][:-len(c["id"]) - 1]
            client = RawxClient(node, timeout=timeout)
            try:
                client.delete(c["id"])
            except RawxError as exc:
                log.warning("could not delete %s after a failed put: %s", c["url"], exc)
            finally:
                client.close()
