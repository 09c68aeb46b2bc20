"""Reading byte ranges of erasure-coded objects from their chunks.

For bytes [s, e] of a metachunk only the segments s // 1 MiB .. e // 1 MiB
are fetched: one ranged GET per chunk used, streamed and cut into fragments.
Data chunks (0..k-1) are preferred since decoding them is a copy; when a
chunk is missing, unreachable, ends early, or gives a fragment whose header
(magic, metadata checksum, index, sizes) or inline CRC32 does not check, it
is dropped for the rest of the read and the next parity chunk takes its
place from the same segment on. Fewer than k usable chunks is an
``ECReadError``.

With checksum type "none" (OpenIO's default) a flipped payload byte cannot
be seen in the fragment itself, so ``verify=True`` first checks each chunk
against its own hash: a HEAD with ``X-oio-check-hash`` makes its node
re-hash the whole chunk and compare with the description's hash (the k
chunks about to be used are checked in parallel, a replacement when it is
needed). A chunk that fails is left out like a missing one, before any of
its bytes are used. The MD5 of each whole metachunk read (and of the whole
object) is still compared with the description at the end, as a last
check of the decoded bytes (``ECIntegrityError``). Without ``verify`` the
chunks are trusted: a corrupt payload byte gives a wrong output byte.
"""
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from storage.ec import header
from storage.ec.codec import Codec
from storage.ec.description import layout_of
from storage.ec.errors import ECDriverError
from storage.rawxclient import RawxClient, RawxError, split_chunk_url

log = logging.getLogger(__name__)


class ECReadError(Exception):
    """Too few usable chunks to rebuild the requested bytes."""


class ECIntegrityError(ECReadError):
    """The bytes read do not match the hash recorded in the description."""


class FragmentSource:
    """The fragments of segments first..last of one metachunk, segment by
    segment, from the usable chunks (never those in ``exclude``).

    ``fragments(j)`` returns {index: fragment view} for k validated
    fragments of segment j (views valid until the next call); segments must
    be asked for in increasing order. ``problems`` lists what went wrong.
    With ``verify`` each chunk is checked against its hash (``check_chunk``)
    before its first fragment is used.
    """

    def __init__(self, mc, layout, first, last, exclude=(), timeout=30.0, verify=False):
        """Segments ``first``..``last`` (inclusive) will be asked for."""
        if not 0 <= first <= last:
            raise ValueError(f"bad segment span {first}..{last}")
        self.mc = mc
        self.layout = layout
        self.timeout = timeout
        last_off, last_len = layout.fragment_span(mc["size"], last)
        self.range_end = last_off + last_len - 1        # inclusive, in the chunks
        self.chunks = {c["index"]: c for c in mc["chunks"]}
        self.order = [i for i in range(layout.n) if i not in set(exclude)]
        self.verify = verify
        self.checked = set()        # indexes whose hash check passed
        self.bad = {}               # index -> reason
        self.streams = {}           # index -> (ChunkReader, next chunk offset)
        self.buffers = {}
        self.problems = []

    def _drop(self, index, reason):
        self.bad[index] = reason
        self.problems.append(f"chunk {self.chunks[index]['pos']} ({self.chunks[index]['url']}): "
                             f"{reason}")
        log.warning("EC read: chunk %s dropped: %s", self.chunks[index]["url"], reason)
        entry = self.streams.pop(index, None)
        if entry is not None:
            entry[0].abandon()

    def _stream(self, index, offset):
        entry = self.streams.get(index)
        if entry is not None and entry[1] == offset:
            return entry[0]
        if entry is not None:
            entry[0].abandon()
        node, cid = split_chunk_url(self.chunks[index]["url"])
        client = RawxClient(node, timeout=self.timeout)
        try:
            reader = client.get(cid, offset, self.range_end)
        except RawxError:
            client.close()
            raise
        self.streams[index] = (reader, offset)
        return reader

    def _check(self, indexes):
        """Hash-check the chunks not checked yet (in parallel); drop the bad."""
        todo = [i for i in indexes if i not in self.checked and i not in self.bad]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            results = list(pool.map(
                lambda i: check_chunk(self.mc, self.chunks[i], self.timeout), todo))
        for index, result in zip(todo, results):
            if result["state"] == "ok":
                self.checked.add(index)
            else:
                self._drop(index, f"{result['state']}: {result['detail']}")

    def fragments(self, j):
        mc_size = self.mc["size"]
        _, seg_len = self.layout.segment_span(mc_size, j)
        offset, fsize = self.layout.fragment_span(mc_size, j)
        if self.verify:
            self._check([i for i in self.order if i not in self.bad][:self.layout.k])
        frags = {}
        for index in self.order:
            if len(frags) == self.layout.k:
                break
            if index in self.bad:
                continue
            if self.verify and index not in self.checked:
                self._check([index])
                if index in self.bad:
                    continue
            buf = self.buffers.get(index)
            if buf is None:
                buf = self.buffers[index] = memoryview(bytearray(self.layout.full_fragment))
            view = buf[:fsize]
            try:
                reader = self._stream(index, offset)
                reader.readinto_exact(view)
            except RawxError as exc:
                self._drop(index, str(exc) if exc.status != 404 else "missing (404)")
                continue
            self.streams[index] = (reader, offset + fsize)
            try:
                check_fragment(view, index, seg_len, self.layout)
            except ECDriverError as exc:
                self._drop(index, f"segment {j}: {exc}")
                continue
            frags[index] = view
        if len(frags) < self.layout.k:
            raise ECReadError(f"metachunk {self.mc['pos']}, segment {j}: only {len(frags)} usable "
                              f"chunks of {self.layout.n}, need {self.layout.k}: "
                              + "; ".join(self.problems))
        return frags

    def close(self):
        for reader, _ in self.streams.values():
            reader.abandon()        # one connection per stream: nothing to keep
        self.streams.clear()


def check_fragment(view, index, seg_len, layout):
    """Raise an ECDriverError unless the fragment is fragment ``index`` of a
    seg_len-byte segment with a valid header and (if any) payload CRC."""
    hdr = header.parse(view)
    if hdr.index != index:
        raise header.ECInvalidFragmentMetadata(f"fragment index {hdr.index}, expected {index}")
    if hdr.orig_data_size != seg_len or hdr.size != layout.blocksize(seg_len):
        raise header.ECInvalidFragmentMetadata(
            f"fragment of a {hdr.orig_data_size}-byte segment ({hdr.size} payload bytes), "
            f"expected {seg_len}")
    header.check_payload(hdr, view[header.HEADER_SIZE:])


def check_chunk(mc, chunk, timeout=30.0):
    """HEAD one chunk with ``X-oio-check-hash`` (its node re-hashes the data
    against the description's hash) and compare its metadata with the
    description. Returns a dict: metachunk, pos, url, state ("ok",
    "missing", "corrupt", "unreachable", "mismatch", "error") and detail."""
    node, cid = split_chunk_url(chunk["url"])
    client = RawxClient(node, timeout=timeout)
    result = {"metachunk": mc["pos"], "pos": chunk["pos"], "url": chunk["url"]}
    try:
        status, headers = client.head(cid, check_hash=True, expected_hash=chunk.get("hash"))
    except RawxError as exc:
        return dict(result, state="unreachable", detail=str(exc))
    finally:
        client.close()
    if status == 404:
        return dict(result, state="missing", detail="404")
    if status == 412:
        return dict(result, state="corrupt", detail="412: data does not match its hash or size")
    if status != 200:
        return dict(result, state="error", detail=f"HEAD status {status}")
    got = {"pos": headers.get("x-oio-chunk-meta-chunk-pos"),
           "size": headers.get("x-oio-chunk-meta-chunk-size"),
           "metachunk-size": headers.get("x-oio-chunk-meta-metachunk-size")}
    want = {"pos": chunk["pos"], "size": str(chunk["size"]), "metachunk-size": str(mc["size"])}
    wrong = [f"{k} {got[k]!r} (expected {want[k]!r})" for k in want if got[k] != want[k]]
    if wrong:
        return dict(result, state="mismatch", detail="; ".join(wrong))
    return dict(result, state="ok")


def read(desc, start=0, end=None, *, timeout=30.0, verify=False, progress=None, problems=None):
    """Yield the object's bytes [start, end] (inclusive; end None = last
    byte) as bytes pieces of at most one segment. ValueError for a start past
    the end; ECReadError when too few chunks are usable. Each chunk left out
    is described by a line appended to the list ``problems`` if given."""
    size = desc["size"]
    end = size - 1 if end is None else min(end, size - 1)
    if start < 0 or (start >= size and size):
        raise ValueError(f"range start {start} is not in a {size}-byte object")
    if start > end:
        return
    layout = layout_of(desc)
    codec = Codec(desc["k"], desc["m"])
    out = memoryview(bytearray(layout.segment_size))
    whole_object = start == 0 and end == size - 1
    obj_md5 = hashlib.md5() if verify and whole_object else None
    for mc in desc["metachunks"]:
        lo, hi = max(start, mc["offset"]), min(end, mc["offset"] + mc["size"] - 1)
        if lo > hi:
            continue
        lo -= mc["offset"]
        hi -= mc["offset"]
        mc_md5 = hashlib.md5() if verify and lo == 0 and hi == mc["size"] - 1 else None
        segs = layout.segments_for(mc["size"], lo, hi)
        source = FragmentSource(mc, layout, segs[0], segs[-1], timeout=timeout, verify=verify)
        try:
            for j in segs:
                frags = source.fragments(j)
                n = codec.decode_into(list(frags.values()), out)
                seg_off = j * layout.segment_size
                a = max(lo, seg_off) - seg_off
                b = min(hi, seg_off + n - 1) - seg_off
                piece = bytes(out[a:b + 1])
                if mc_md5 is not None:
                    mc_md5.update(piece)
                if obj_md5 is not None:
                    obj_md5.update(piece)
                if progress is not None:
                    progress(len(piece))
                yield piece
        finally:
            source.close()
            if problems is not None:
                problems.extend(source.problems)
        if mc_md5 is not None and mc_md5.hexdigest().upper() != mc["hash"].upper():
            raise ECIntegrityError(f"metachunk {mc['pos']}: MD5 {mc_md5.hexdigest().upper()} "
                                   f"of the bytes read, description says {mc['hash']}")
    if obj_md5 is not None and obj_md5.hexdigest().upper() != desc["md5"].upper():
        raise ECIntegrityError(f"object MD5 {obj_md5.hexdigest().upper()}, description "
                               f"says {desc['md5']}")


def read_all(desc, start=0, end=None, **kw):
    """The bytes [start, end] of the object as one bytes object."""
    return b"".join(read(desc, start, end, **kw))
