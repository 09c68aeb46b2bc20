"""Streaming writer of erasure-coded objects over k + m RAWX nodes.

The input is read in 1 MiB segments into one reused buffer; each segment is
encoded with ``Codec.encode_into`` into a set of k + m fragment buffers
taken from a small pool; fragment i goes to uploader thread i, which appends
it to chunk i's PUT as one HTTP chunk while hashing it. The uploaders run in
parallel (socket sends and MD5 release the GIL) while the main thread reads
and encodes the next segment; a buffer set returns to the pool once all
uploaders have sent their fragment. Memory: the pool (3 x 9 x 171 KiB) plus
one input segment, whatever the object size.

A node that fails does not fail the put while k + m live nodes remain: its
chunks move to the next nodes of the rendezvous order (``failover``).

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
from storage.ec import failover, placement, rebuild
from storage.ec.codec import Codec
from storage.ec.header import DEFAULT_LIBRARY_VERSION
from storage.ec.layout import SEGMENT_SIZE, Layout
from storage.rawxclient import META, RawxClient, RawxError

new_chunk_id = descmod.new_chunk_id
WriteError = failover.WriteError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 100 * (1 << 20)
POOL_DEPTH = 3              # fragment buffer sets in flight
_POLL = 0.5                 # seconds between checks for a failed uploader


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

    def __init__(self, index, timeout, plan, stored, problems):
        super().__init__(name=f"ec-upload-{index}", daemon=True)
        self.index = index
        self.timeout = timeout
        self.plan = plan
        self.stored = stored        # URLs of the chunks stored (shared)
        self.problems = problems    # what went wrong, one line each (shared)
        self.inbox = queue.Queue()
        self.clients = {}
        self._warm = set()          # nodes whose kept-alive connection served a PUT
        self.error = None           # an error that ends the put
        self.done = {}              # metachunk number -> (chunk hash, chunk size)
        self._number = None
        self._chunk = None          # this metachunk's chunk entry (url updated here)
        self._headers = None
        self._upload = None         # None once this metachunk's chunk is lost
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
                        if self.error is None and self._upload is not None:
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
                    elif kind == "end" and self._upload is not None:
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

    def _node(self):
        return self._chunk["url"][:-len(self._chunk["id"]) - 1]

    def _open(self):
        """Start the PUT of the chunk, on the next node while one refuses."""
        while True:
            node = self._node()
            client = self.clients.get(node)
            if client is None:
                client = self.clients[node] = RawxClient(node, timeout=self.timeout)
            try:
                self._upload = client.put(self._chunk["id"], self._headers,
                                          descmod.CHUNK_TRAILERS)
                return
            except RawxError as exc:
                if node in self._warm:      # a kept-alive connection: try a fresh one
                    self._warm.discard(node)
                else:
                    self._moved(node, exc)

    def _moved(self, node, exc):
        new = self.plan.replace(self._number, self.index, node, exc)
        self._chunk["url"] = f"{new}/{self._chunk['id']}"
        self.problems.append(f"chunk {self._chunk['pos']}: {node} failed ({exc}): "
                             f"sent to {new} instead")
        log.warning("EC put: %s", self.problems[-1])

    def _begin(self, number, chunk, headers):
        self._number, self._chunk, self._headers = number, chunk, headers
        self._md5 = hashlib.md5()
        self._size = 0
        self._open()

    def _send(self, view):
        while True:
            try:
                self._upload.write(view)
                break
            except RawxError as exc:
                if self._size:
                    self._lose(exc)
                    return
                # Nothing sent yet: start over on a fresh connection if the node
                # may just have closed a kept-alive one, else on another node.
                node = self._node()
                if node in self._warm:
                    self._warm.discard(node)
                else:
                    self._moved(node, exc)
                self._open()
        self._md5.update(view)
        self._size += view.nbytes

    def _lose(self, exc):
        node = self._node()
        self._warm.discard(node)
        self._upload.abort()
        self._upload = None
        self.plan.lose(self._number, self.index, node, self._chunk["id"], exc)
        self.problems.append(f"chunk {self._chunk['pos']}: {node} failed after "
                             f"{self._size} bytes ({exc}): to be stored again elsewhere")
        log.warning("EC put: %s", self.problems[-1])

    def _end(self, number, mc_trailers):
        chunk_hash = self._md5.hexdigest().upper()
        trailers = dict(mc_trailers)
        trailers[META + "Chunk-Hash"] = chunk_hash
        trailers[META + "Chunk-Size"] = str(self._size)
        try:
            reply = self._upload.finish(trailers)
        except RawxError as exc:
            self._lose(exc)
            return
        self._upload = None
        self._warm.add(self._node())
        self.stored.append(self._chunk["url"])
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


def put(stream, nodes, *, path, account="acct", container="cont", version=None,
        content_id=None, k=6, m=3, chunk_size=DEFAULT_CHUNK_SIZE, storage_policy=None,
        chksum_type="none", library_version=DEFAULT_LIBRARY_VERSION, timeout=30.0,
        progress=None, size=None, problems=None):
    """Store the bytes of a binary stream as an EC object on k + m of the
    ``nodes`` (URLs) chosen per metachunk by rendezvous hashing; returns its
    description (a dict, see storage.ec.description). ``chunk_size`` is the
    data bytes per chunk (metachunk = k x chunk_size, whole MiB);
    ``progress(nbytes)`` is called after each segment; ``size`` (bytes the
    stream will give, found with fstat for a regular file) lets a
    one-metachunk object skip hashing its bytes twice.

    A node that fails is replaced by the next one of the rendezvous order
    (see ``failover``): the chunks sent to it are deleted (best effort)
    and stored on other nodes, rebuilt from the others or, when more than
    m of a metachunk are lost, from the input read again (a seekable one);
    a line per replacement is appended to the list ``problems`` if given.
    WriteError when fewer than k + m distinct live nodes remain (or more
    than m chunks of a metachunk are lost and the input is not seekable);
    every chunk already stored is deleted then (best effort)."""
    layout = Layout(k, m, SEGMENT_SIZE)
    codec = Codec(k, m, chksum_type=chksum_type, library_version=library_version)
    limit = layout.metachunk_limit(chunk_size)
    nodes = list(dict.fromkeys(placement.normalize_url(n) for n in nodes))
    if len(nodes) < layout.n:
        raise WriteError(f"need {layout.n} distinct nodes, got {len(nodes)}")
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
    start = failover.start_offset(stream)
    plan = failover.Plan(nodes, content_id, layout, reread=start is not None)
    stored = []
    problems = [] if problems is None else problems
    pool = queue.Queue()
    for _ in range(POOL_DEPTH):
        pool.put(_BufferSet(layout.n, layout.full_fragment, pool))
    uploaders = [_Uploader(i, timeout, plan, stored, problems) for i in range(layout.n)]
    for u in uploaders:
        u.start()
    segment = bytearray(SEGMENT_SIZE)
    if size is None:
        size = _known_size(stream)
    # One metachunk: its MD5 is the object's, no need to hash twice.
    obj_md5 = hashlib.md5() if size is None or size > limit else None
    ok = False
    try:
        seg_len = failover.read_full(stream, segment)
        number = 0
        while True:
            mc = _write_metachunk(desc, number, stream, segment, seg_len, limit, layout, codec,
                                  plan, pool, uploaders, obj_md5, progress)
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
        _raise_failed(uploaders, plan)
        for mc in desc["metachunks"]:
            lost = plan.lost.setdefault(mc["pos"], {})
            for c in mc["chunks"]:
                if c["index"] in lost:
                    continue
                c["hash"], c["size"] = uploaders[c["index"]].done[mc["pos"]]
                node = c["url"][:-len(c["id"]) - 1]
                if node in plan.dead:   # stored before its node failed: moved too
                    lost[c["index"]] = (node, c["id"])
                    problems.append(f"chunk {c['pos']}: stored on {node} before it failed")
            if len(lost) > layout.m:
                if start is None:
                    raise plan.too_many(mc["pos"])
                failover.resend(desc, mc, lost, plan, stream, start, codec, segment,
                                pool.get_nowait().views, stored, problems, timeout)
            else:
                failover.regenerate(desc, mc, lost, plan, stored, problems, timeout)
            for c in mc["chunks"]:
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
        # The chunks sent to a failed node go too: an upload that failed may
        # have been stored before its reply was lost.
        moved = [f"{node}/{cid}" for lost in plan.lost.values() for node, cid in lost.values()]
        _delete(dict.fromkeys(moved if ok else stored + moved), timeout, quiet=ok)


def _write_metachunk(desc, number, stream, segment, seg_len, limit, layout, codec, plan,
                     pool, uploaders, obj_md5, progress):
    targets = plan.assign(number)
    chunks = []
    for i, node in enumerate(targets):
        cid = new_chunk_id()
        pos = f"{number}.{i}"
        chunk = {"index": i, "pos": pos, "url": f"{node}/{cid}", "id": cid,
                 "size": None, "hash": None}
        chunks.append(chunk)
        uploaders[i].inbox.put(("begin", number, chunk, descmod.chunk_headers(desc, pos, cid)))
    mc_md5 = hashlib.md5()
    size = 0
    while seg_len and size < limit:
        data = memoryview(segment)[:seg_len]
        mc_md5.update(data)
        if obj_md5 is not None:
            obj_md5.update(data)
        bufs = _take(pool, uploaders, plan)
        fsize = codec.encode_into(data, bufs.views)
        bufs.arm(layout.n)
        for u in uploaders:
            u.inbox.put(("data", bufs, fsize))
        size += seg_len
        if progress is not None:
            progress(seg_len)
        seg_len = failover.read_full(stream, segment) if seg_len == len(segment) else 0
    mc_hash = mc_md5.hexdigest().upper()
    for u in uploaders:
        u.inbox.put(("end", number, descmod.metachunk_trailers(size, mc_hash)))
    return {"pos": number, "offset": desc["size"], "size": size, "hash": mc_hash,
            "chunk_size": layout.chunk_size(size), "chunks": chunks, "_next": seg_len}


def _raise_failed(uploaders, plan):
    if plan.error is not None:
        raise plan.error
    failed = [u for u in uploaders if u.error is not None]
    if failed:
        if any(isinstance(u.error, WriteError) for u in failed):
            raise next(u.error for u in failed if isinstance(u.error, WriteError))
        detail = "; ".join(f"chunk {u.index}: {u.error}" for u in failed)
        raise WriteError(f"{len(failed)} chunk upload(s) failed: {detail}")


def _take(pool, uploaders, plan):
    """A free buffer set; WriteError as soon as the put cannot succeed."""
    while True:
        _raise_failed(uploaders, plan)
        try:
            return pool.get(timeout=_POLL)
        except queue.Empty:
            if not any(u.is_alive() for u in uploaders):
                raise WriteError("every uploader stopped") from None


def _delete(urls, timeout, quiet):
    """Delete chunks (best effort): those stored before a failed put, or
    those whose upload failed (they may have been stored all the same)."""
    for url in urls:
        error = rebuild.delete_chunk(url, timeout)
        if error is not None and not quiet:
            log.warning("could not delete %s after a failed put: %s", url, error)
