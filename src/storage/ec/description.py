"""The JSON description of an erasure-coded object, and the chunk metadata
headers OpenIO clients send with each chunk.

A description (what ``put`` prints and ``get``/``rebuild``/``check`` take):

    {"format": "storage-node-ec/1", "account", "container", "path",
     "version", "content_id", "full_path",
     "size", "md5",                       # whole object, md5 in upper hex
     "segment_size", "k", "m", "algo", "chunk_method", "storage_policy",
     "chksum_type", "metachunk_limit",
     "metachunks": [{"pos": N, "offset", "size", "hash", "chunk_size",
                     "chunks": [{"index": i, "pos": "N.i", "url", "id",
                                 "size", "hash"}]}]}
"""
import hashlib
import json
import secrets
from urllib.parse import quote

from storage.ec.layout import Layout
from storage.rawxclient import META, split_chunk_url

FORMAT = "storage-node-ec/1"
ALGO = "liberasurecode_rs_vand"


class DescriptionError(ValueError):
    """A description that cannot be used (missing keys, inconsistent sizes)."""


def new_chunk_id():
    """A fresh random chunk id: 64 upper-case hex digits."""
    return secrets.token_hex(32).upper()


def chunk_method(k, m, algo=ALGO):
    return f"ec/algo={algo},k={k},m={m}"


def full_path(account, container, path, version, content_id):
    """acct/cont/path/version/contentid, each text part percent-encoded."""
    return "/".join([quote(account, safe=""), quote(container, safe=""), quote(path, safe=""),
                     str(version), content_id])


def container_id(account, container):
    return hashlib.sha256(f"{account}\0{container}".encode()).hexdigest().upper()


def chunk_headers(desc, pos, chunk_id):
    """Request headers of the PUT of one chunk (the trailers come later)."""
    return {
        META + "Content-Storage-Policy": desc["storage_policy"],
        META + "Content-Chunk-Method": desc["chunk_method"],
        META + "Chunk-Pos": pos,
        META + "Full-Path": desc["full_path"],
        META + "Chunk-Id": chunk_id,
        META + "Container-Id": container_id(desc["account"], desc["container"]),
        META + "Content-Path": quote(desc["path"], safe=""),
        META + "Content-Version": str(desc["version"]),
        META + "Content-Id": desc["content_id"],
    }


def metachunk_trailers(size, md5_hex):
    return {META + "Metachunk-Size": str(size), META + "Metachunk-Hash": md5_hex}


CHUNK_TRAILERS = (META + "Metachunk-Size", META + "Metachunk-Hash",
                  META + "Chunk-Hash", META + "Chunk-Size")


def dumps(desc):
    return json.dumps(desc, indent=1, sort_keys=False) + "\n"


def load(text):
    """Parse and check a description; DescriptionError says what is wrong."""
    try:
        desc = json.loads(text)
    except ValueError as exc:
        raise DescriptionError(f"description is not JSON: {exc}") from None
    check(desc)
    return desc


def check(desc):
    """Raise DescriptionError unless the description is self-consistent."""
    try:
        if desc.get("format") != FORMAT:
            raise DescriptionError(f"unknown description format {desc.get('format')!r}")
        if desc["algo"] != ALGO:
            raise DescriptionError(f"unsupported algorithm {desc['algo']!r}")
        layout = Layout(desc["k"], desc["m"], desc["segment_size"])
        offset = 0
        for number, mc in enumerate(desc["metachunks"]):
            if mc["pos"] != number or mc["offset"] != offset:
                raise DescriptionError(f"metachunk {number}: position or offset out of order")
            if mc["chunk_size"] != layout.chunk_size(mc["size"]):
                raise DescriptionError(f"metachunk {number}: chunk size {mc['chunk_size']} "
                                       f"does not fit {mc['size']} bytes")
            indexes = sorted(c["index"] for c in mc["chunks"])
            if indexes != list(range(layout.n)):
                raise DescriptionError(f"metachunk {number}: chunk indexes {indexes}")
            for c in mc["chunks"]:
                if c["pos"] != f"{number}.{c['index']}":
                    raise DescriptionError(f"metachunk {number}: chunk position {c['pos']!r}")
                if split_chunk_url(c["url"])[1] != c["id"]:
                    raise DescriptionError(f"chunk {c['pos']}: URL {c['url']!r} does not end "
                                           f"with its id")
            offset += mc["size"]
        if offset != desc["size"]:
            raise DescriptionError(f"metachunks hold {offset} bytes, object is {desc['size']}")
    except (KeyError, TypeError, AttributeError) as exc:
        raise DescriptionError(f"description is missing or has a bad {exc}") from None
    except ValueError as exc:
        if isinstance(exc, DescriptionError):
            raise
        raise DescriptionError(str(exc)) from None


def layout_of(desc):
    return Layout(desc["k"], desc["m"], desc["segment_size"])


def chunk_of(mc, index):
    for c in mc["chunks"]:
        if c["index"] == index:
            return c
    raise DescriptionError(f"metachunk {mc['pos']} has no chunk {index}")
