"""Rebuilding a lost chunk of an EC object, and checking all its chunks.

``rebuild`` streams 174844-byte fragments from k surviving chunks of the
metachunk, reconstructs fragment i of each segment and streams the result
to a node as a new chunk with the original's metadata (position N.i,
metachunk size and hash, same content). The rebuilt header carries the
library version and checksum type of the survivors, so the chunk is
byte-identical to the lost one; its MD5 is compared with the hash in the
description before the upload is completed, and a mismatch aborts it (the
node keeps nothing).

Chunk id: a new random id by default (the OpenIO rebuilder's way: ids are
never reused, so a stale copy that comes back cannot be mistaken for the
new one); ``same_id=True`` keeps the old id. Either way the description is
updated in place with the new URL.
"""
import hashlib
from concurrent.futures import ThreadPoolExecutor

from storage.ec import description as descmod
from storage.ec import header, placement
from storage.ec.codec import Codec
from storage.ec.reader import FragmentSource, check_chunk
from storage.ec.rawxclient import META, RawxClient, RawxError, split_chunk_url
from storage.ec.writer import new_chunk_id


class RebuildError(Exception):
    """The chunk could not be rebuilt (too few survivors, target failed, or
    the result does not match the recorded hash)."""


def spare_node(desc, number, nodes):
    """The best node (rendezvous order) holding no chunk of metachunk
    ``number``; RebuildError if every node holds one."""
    mc = desc["metachunks"][number]
    used = {split_chunk_url(c["url"])[0] for c in mc["chunks"]}
    for node in placement.rank(nodes, placement.metachunk_key(desc["content_id"], number)):
        if node not in used:
            return node
    raise RebuildError(f"every given node already holds a chunk of metachunk {number}")


def rebuild(desc, number, index, target, *, same_id=False, timeout=30.0, progress=None):
    """Regenerate chunk ``index`` of metachunk ``number`` onto the node
    ``target`` (URL); updates ``desc`` and returns the new chunk entry."""
    layout = descmod.layout_of(desc)
    try:
        mc = desc["metachunks"][number]
    except IndexError:
        raise RebuildError(f"the object has no metachunk {number}") from None
    old = descmod.chunk_of(mc, index)
    target = placement.normalize_url(target)
    cid = old["id"] if same_id else new_chunk_id()
    segs = range(layout.segment_count(mc["size"]))
    source = FragmentSource(mc, layout, 0, segs[-1], exclude=(index,), timeout=timeout) \
        if segs else None
    client = RawxClient(target, timeout=timeout)
    upload = None
    codecs = {}
    out = memoryview(bytearray(layout.full_fragment))
    md5 = hashlib.md5()
    size = 0
    try:
        upload = client.put(cid, descmod.chunk_headers(desc, old["pos"], cid),
                            descmod.CHUNK_TRAILERS)
        for j in segs:
            try:
                frags = source.fragments(j)
            except Exception as exc:
                raise RebuildError(f"chunk {old['pos']}: {exc}") from exc
            first = header.parse(next(iter(frags.values())))
            key = (first.chksum_type, first.library_version)
            codec = codecs.get(key)
            if codec is None:
                codec = codecs[key] = Codec(
                    layout.k, layout.m, chksum_type=_chksum_name(first.chksum_type),
                    library_version=first.library_version)
            fsize = codec.reconstruct_into(list(frags.values()), [index], [out])
            piece = out[:fsize]
            md5.update(piece)
            upload.write(piece)
            size += fsize
            if progress is not None:
                progress(fsize)
        chunk_hash = md5.hexdigest().upper()
        if old.get("hash") and chunk_hash != old["hash"].upper():
            raise RebuildError(f"rebuilt chunk {old['pos']} has MD5 {chunk_hash}, the "
                               f"description says {old['hash']}: not stored")
        if size != mc["chunk_size"]:
            raise RebuildError(f"rebuilt chunk {old['pos']} is {size} bytes, expected "
                               f"{mc['chunk_size']}")
        trailers = descmod.metachunk_trailers(mc["size"], mc["hash"])
        trailers[META + "Chunk-Hash"] = chunk_hash
        trailers[META + "Chunk-Size"] = str(size)
        try:
            upload.finish(trailers)
        except RawxError as exc:
            raise RebuildError(f"storing chunk {old['pos']} on {target}: {exc}") from exc
        upload = None
    except RawxError as exc:
        raise RebuildError(f"storing chunk {old['pos']} on {target}: {exc}") from exc
    finally:
        if upload is not None:
            upload.abort()
        client.close()
        if source is not None:
            source.close()
    old.update({"url": f"{target}/{cid}", "id": cid, "hash": chunk_hash, "size": size})
    return old


def _chksum_name(ctype):
    return "inline_crc32" if ctype == header.CHKSUM_CRC32 else "none"


def check(desc, *, timeout=30.0, workers=9):
    """HEAD every chunk with ``X-oio-check-hash: true`` (the node re-hashes
    the data against the description's hash). Returns one dict per chunk:
    metachunk, pos, url, state ("ok", "missing", "corrupt", "unreachable",
    "mismatch", "error") and detail."""
    jobs = [(mc, c) for mc in desc["metachunks"] for c in mc["chunks"]]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        return list(pool.map(lambda job: check_chunk(job[0], job[1], timeout), jobs))
