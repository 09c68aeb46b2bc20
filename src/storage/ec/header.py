"""The 80-byte liberasurecode fragment header: pack, parse, validate.

Layout (packed, little-endian): index u32 @0, size u32 @4, backend metadata
size u32 @8, original data size u64 @12, checksum type u8 @20, checksum
u32 x 8 @21, checksum mismatch u8 @53, backend id u8 @54, backend version
u32 @55, magic u32 @59, library version u32 @63, metadata checksum u32 @67,
9 bytes of padding. The metadata checksum covers bytes 0..58.
"""
import struct
import zlib
from typing import NamedTuple

from storage.ec.errors import ECBadFragmentChecksum, ECInvalidFragmentMetadata

HEADER_SIZE = 80
METADATA_SIZE = 59          # the part covered by the metadata checksum
PAYLOAD_CRC_OFFSET = 21     # the first of the 8 checksum words: the payload's CRC-32
METADATA_CRC_OFFSET = 67
MAGIC = 0x0B0C5ECC
BACKEND_ID_RS_VAND = 6      # liberasurecode_rs_vand
BACKEND_VERSION = 0x00010000
DEFAULT_LIBRARY_VERSION = 0x010800

CHKSUM_NONE = 1
CHKSUM_CRC32 = 2
CHKSUM_TYPES = {"none": CHKSUM_NONE, "inline_crc32": CHKSUM_CRC32}
CHKSUM_NAMES = {CHKSUM_NONE: "none", CHKSUM_CRC32: "crc32"}

_META = struct.Struct("<IIIQB8IBBI")      # bytes 0..58
_TAIL = struct.Struct("<III")             # magic, library version, metadata crc
assert _META.size == METADATA_SIZE and _META.size + _TAIL.size == 71
assert METADATA_CRC_OFFSET == METADATA_SIZE + 8 and PAYLOAD_CRC_OFFSET == struct.calcsize("<IIIQB")


class FragmentHeader(NamedTuple):
    index: int
    size: int               # payload bytes (the blocksize)
    orig_data_size: int     # bytes of the segment this fragment belongs to
    chksum_type: int        # CHKSUM_NONE or CHKSUM_CRC32
    chksum: int             # CRC32 of the payload when chksum_type is CRC32
    chksum_mismatch: int
    backend_id: int
    backend_version: int
    library_version: int
    metadata_chksum: int


def _crc32_alt_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_ALT_TABLE = _crc32_alt_table()


def crc32_alt(data):
    """The metadata CRC of liberasurecode 1.2-1.5 writers: the reflected
    CRC-32 table, but with the register shifted as a *signed* 32-bit int
    (arithmetic shift), so it differs from zlib.crc32 once bit 31 is set."""
    crc = 0xFFFFFFFF
    for b in bytes(data):
        shifted = crc >> 8
        if crc & 0x80000000:
            shifted |= 0xFF000000
        crc = _ALT_TABLE[(crc ^ b) & 0xFF] ^ shifted
    return crc ^ 0xFFFFFFFF


_PACKED = {}          # (fields) -> 80 header bytes: segments repeat their sizes
_PARSED = {}          # 80 header bytes -> FragmentHeader (validation is a pure function of them)
_CACHE_LIMIT = 1024


def _remember(cache, key, value):
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _build(index, size, orig_data_size, chksum_type, payload_crc, library_version):
    raw = bytearray(HEADER_SIZE)
    checksums = (payload_crc if chksum_type == CHKSUM_CRC32 else 0, 0, 0, 0, 0, 0, 0, 0)
    _META.pack_into(raw, 0, index, size, 0, orig_data_size, chksum_type, *checksums,
                    0, BACKEND_ID_RS_VAND, BACKEND_VERSION)
    meta_crc = zlib.crc32(raw[:METADATA_SIZE])
    _TAIL.pack_into(raw, METADATA_SIZE, MAGIC, library_version, meta_crc)
    return bytes(raw)


def packed(index, size, orig_data_size, chksum_type=CHKSUM_NONE, payload_crc=0,
           library_version=DEFAULT_LIBRARY_VERSION):
    """The 80 header bytes for these fields (cached: segments repeat sizes)."""
    key = (index, size, orig_data_size, chksum_type, payload_crc, library_version)
    raw = _PACKED.get(key)
    if raw is None:
        raw = _build(*key)
        if chksum_type != CHKSUM_CRC32:   # CRC headers are one-offs: do not cache
            _remember(_PACKED, key, raw)
    return raw


def pack_into(buf, offset, index, size, orig_data_size, chksum_type=CHKSUM_NONE,
              payload_crc=0, library_version=DEFAULT_LIBRARY_VERSION):
    """Write a header at buf[offset:offset+80] (buf writable, any bytes-like)."""
    raw = packed(index, size, orig_data_size, chksum_type, payload_crc, library_version)
    memoryview(buf).cast("B")[offset:offset + HEADER_SIZE] = raw


def pack(index, size, orig_data_size, chksum_type=CHKSUM_NONE, payload_crc=0,
         library_version=DEFAULT_LIBRARY_VERSION):
    """A new 80-byte header as bytes."""
    return _build(index, size, orig_data_size, chksum_type, payload_crc, library_version)


def parse(fragment, position=None):
    """Parse and validate the header of a fragment (any bytes-like).

    Checks the length, magic, metadata checksum (both CRC variants), backend
    id and version, and checksum type; raises ECInvalidFragmentMetadata naming
    the problem (and ``position`` in the caller's list when given)."""
    view = memoryview(fragment).cast("B")
    key = bytes(view[:HEADER_SIZE])
    hdr = _PARSED.get(key)
    if hdr is not None:
        return hdr
    where = "" if position is None else f" (fragment at position {position})"
    if view.nbytes < HEADER_SIZE:
        raise ECInvalidFragmentMetadata(
            f"fragment is {view.nbytes} bytes, shorter than the {HEADER_SIZE}-byte header{where}")
    magic, libver, meta_crc = _TAIL.unpack_from(view, METADATA_SIZE)
    if magic != MAGIC:
        raise ECInvalidFragmentMetadata(f"bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}{where}")
    meta = view[:METADATA_SIZE]
    if meta_crc != zlib.crc32(meta) and meta_crc != crc32_alt(meta):
        raise ECInvalidFragmentMetadata(f"bad metadata checksum 0x{meta_crc:08x}{where}")
    fields = _META.unpack_from(view, 0)
    index, size, _bmd, orig, ctype = fields[:5]
    chksum = fields[5]
    mismatch, backend_id, backend_version = fields[13:16]
    if backend_id != BACKEND_ID_RS_VAND:
        raise ECInvalidFragmentMetadata(
            f"backend id {backend_id} is not liberasurecode_rs_vand ({BACKEND_ID_RS_VAND}){where}")
    if backend_version != BACKEND_VERSION:
        raise ECInvalidFragmentMetadata(
            f"backend version 0x{backend_version:08x}, expected 0x{BACKEND_VERSION:08x}{where}")
    if ctype not in CHKSUM_NAMES:
        raise ECInvalidFragmentMetadata(f"unknown checksum type {ctype}{where}")
    hdr = FragmentHeader(index, size, orig, ctype, chksum, mismatch, backend_id,
                         backend_version, libver, meta_crc)
    if ctype != CHKSUM_CRC32:
        _remember(_PARSED, key, hdr)
    return hdr


def check_payload(hdr, payload, position=None):
    """Raise ECBadFragmentChecksum if an inline-CRC32 fragment's payload is
    not the one its header describes; no-op for checksum type none."""
    if hdr.chksum_type == CHKSUM_CRC32:
        actual = zlib.crc32(payload)
        if actual != hdr.chksum:
            where = "" if position is None else f" (fragment at position {position})"
            raise ECBadFragmentChecksum(
                f"fragment {hdr.index}: payload CRC32 0x{actual:08x} does not match "
                f"its header's 0x{hdr.chksum:08x}{where}")
