"""Rebuilding a lost chunk of an EC object, and checking all its chunks.

``rebuild`` streams 174844-byte fragments from k surviving chunks of the
metachunk, reconstructs fragment i of each segment and streams the result
to a node as a new chunk with the original's metadata (position N.i,
metachunk size and hash, same content). The rebuilt header carries the
library version and checksum type of the survivors, so the chunk is
byte-identical to the lost one; its MD5 is compared with the hash in the
description before the upload is completed, and a mismatch aborts it (the
node keeps nothing). Survivors are checked against their own hash before
they are used (``FragmentSource(verify=True)``), so a corrupt one is left
out rather than copied into the new chunk.

Targets are tried in order: one that cannot be reached or fails while the
chunk streams to it is skipped for the next (and remembered in ``dead``,
so a caller rebuilding several chunks tries it once); the chunk's bytes are
then streamed again from the survivors. A failing survivor is not the
target's fault: too few good survivors ends the rebuild of that chunk.

Chunk id: a new random id by default (the OpenIO rebuilder's way: ids are
never reused, so a stale copy that comes back cannot be mistaken for the
new one); ``same_id=True`` keeps the old id. Either way the description is
updated in place with the new URL; writing it out, and deleting the old
copy once it is written, is the caller's job (``delete_chunk``).
"""
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from storage.ec import description as descmod
from storage.ec import header, placement
from storage.ec.codec import Codec
from storage.ec.reader import FragmentSource, check_chunk
from storage.rawxclient import META, RawxClient, RawxError, split_chunk_url

log = logging.getLogger(__name__)


class RebuildError(Exception):
    """The chunk could not be rebuilt (too few good survivors, every target
    failed, or the result does not match the recorded hash)."""


class _TargetFailed(Exception):
    """The target could not store the chunk; another may."""


def spares(desc, number, nodes):
    """The given nodes holding no chunk of metachunk ``number``, best first
    (rendezvous order): where a chunk of it may be rebuilt."""
    mc = desc["metachunks"][number]
    used = {split_chunk_url(c["url"])[0] for c in mc["chunks"]}
    return [n for n in placement.rank(nodes, placement.metachunk_key(desc["content_id"], number))
            if n not in used]


def spare_node(desc, number, nodes):
    """The best spare for metachunk ``number``; RebuildError if every node
    holds one of its chunks."""
    found = spares(desc, number, nodes)
    if not found:
        raise RebuildError(f"every given node already holds a chunk of metachunk {number}: "
                           f"list at least one more node as a spare")
    return found[0]


def rebuild(desc, number, index, targets, *, same_id=False, exclude=(), verify=True, dead=None,
            timeout=30.0, progress=None):
    """Regenerate chunk ``index`` of metachunk ``number`` onto the first of
    ``targets`` (a node URL, or URLs in order of preference) that stores
    it; updates ``desc`` and returns the new chunk entry. Chunks listed in
    ``exclude`` (indexes) are not read; with ``verify`` each survivor is
    hash-checked before use. A failing target is recorded in the dict
    ``dead`` (URL -> reason), whose nodes are never tried. RebuildError if
    no target stored the chunk or the survivors cannot give it."""
    try:
        mc = desc["metachunks"][number]
    except IndexError:
        raise RebuildError(f"the object has no metachunk {number}") from None
    old = descmod.chunk_of(mc, index)
    if isinstance(targets, str):
        targets = [targets]
    dead = {} if dead is None else dead
    tried = []
    for target in targets:
        target = placement.normalize_url(target)
        if target in dead:
            continue
        cid = old["id"] if same_id else descmod.new_chunk_id()
        try:
            chunk_hash, size = _rebuild_onto(desc, mc, old, target, cid, exclude, verify,
                                             timeout, progress)
        except _TargetFailed as exc:
            dead[target] = str(exc)
            tried.append(f"{target}: {exc}")
            log.warning("rebuild of %s: target %s skipped: %s", old["pos"], target, exc)
            continue
        old.update({"url": f"{target}/{cid}", "id": cid, "hash": chunk_hash, "size": size})
        return old
    if not tried:
        raise RebuildError(f"chunk {old['pos']}: no target to rebuild it on (every one "
                           f"given failed before or holds a chunk of metachunk {number})")
    raise RebuildError(f"chunk {old['pos']}: every target failed: " + "; ".join(tried))


def _rebuild_onto(desc, mc, old, target, cid, exclude, verify, timeout, progress):
    """Stream the rebuilt chunk to ``target`` as ``cid``: (hash, size).
    _TargetFailed for the target's errors, RebuildError for the rest."""
    layout = descmod.layout_of(desc)
    index = old["index"]
    segs = range(layout.segment_count(mc["size"]))
    source = FragmentSource(mc, layout, 0, segs[-1], exclude={index, *exclude},
                            timeout=timeout, verify=verify) if segs else None
    client = RawxClient(target, timeout=timeout)
    upload = None
    codecs = {}
    out = memoryview(bytearray(layout.full_fragment))
    md5 = hashlib.md5()
    size = 0
    try:
        try:
            upload = client.put(cid, descmod.chunk_headers(desc, old["pos"], cid),
                                descmod.CHUNK_TRAILERS)
        except RawxError as exc:
            raise _TargetFailed(exc) from exc
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
            try:
                upload.write(piece)
            except RawxError as exc:
                raise _TargetFailed(exc) from exc
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
        upload, finishing = None, upload
        try:
            finishing.finish(trailers)
        except RawxError as exc:
            # The node may have stored it before the reply was lost.
            if exc.status is None:
                delete_chunk(f"{target}/{cid}", timeout)
            raise _TargetFailed(exc) from exc
        return chunk_hash, size
    finally:
        if upload is not None:
            upload.abort()
        client.close()
        if source is not None:
            source.close()


def delete_chunk(url, timeout=30.0):
    """DELETE a chunk, best effort: None when it is gone (204 or 404), else
    what went wrong (a string)."""
    node, cid = split_chunk_url(url)
    client = RawxClient(node, timeout=timeout)
    try:
        status = client.delete(cid)
    except RawxError as exc:
        return str(exc)
    finally:
        client.close()
    return None if status in (204, 404) else f"DELETE status {status}"


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
