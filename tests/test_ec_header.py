"""storage.ec.header: the 80-byte liberasurecode fragment header."""
import ctypes
import json
import pathlib
import struct
import zlib

import pytest
from paths import EC_VECTORS
from hypothesis import given, settings, strategies as st

from storage.ec import header
from storage.ec.errors import ECBadFragmentChecksum, ECInvalidFragmentMetadata

VECTORS = EC_VECTORS


def vector_headers():
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    for seg in manifest["segments"]:
        for frag in seg["fragments"]:
            yield bytes.fromhex(frag["header_hex"]), seg["input_size"], seg["blocksize"], frag["index"]


def test_vector_headers_parse_and_repack():
    count = 0
    for raw, size, bs, index in vector_headers():
        h = header.parse(raw)
        assert (h.index, h.size, h.orig_data_size) == (index, bs, size)
        assert h.chksum_type == header.CHKSUM_NONE and h.library_version == 0x010800
        assert header.pack(index, bs, size) == raw
        count += 1
    assert count == 54


def test_inline_crc32_and_library_version():
    payload = b"abc" * 6
    raw = header.pack(2, 18, 100, header.CHKSUM_CRC32, zlib.crc32(payload), 0x010602)
    h = header.parse(raw)
    assert h.chksum_type == header.CHKSUM_CRC32 and h.chksum == zlib.crc32(payload)
    assert h.library_version == 0x010602
    assert raw[21:25] == struct.pack("<I", zlib.crc32(payload))
    header.check_payload(h, payload)
    with pytest.raises(ECBadFragmentChecksum, match="CRC32"):
        header.check_payload(h, b"abd" + payload[3:])


def c_style_crc32_alt(data):
    """liberasurecode's old metadata CRC, with C int semantics spelled out
    through ctypes (signed 32-bit register, arithmetic right shift)."""
    table = header._ALT_TABLE
    crc = ctypes.c_int32(0 ^ -1).value
    for b in data:
        signed_b = b - 256 if b >= 128 else b        # *p is a (signed) char
        idx = (crc ^ signed_b) & 0xFF
        crc = ctypes.c_int32(table[idx] ^ (crc >> 8)).value   # >> on int: arithmetic
    return ctypes.c_uint32(crc ^ -1).value


@settings(max_examples=100)
@given(st.binary(max_size=80))
def test_crc32_alt_matches_c_semantics(data):
    assert header.crc32_alt(data) == c_style_crc32_alt(data)


def test_old_writer_metadata_crc_accepted():
    raw = bytearray(header.pack(1, 18, 100))
    raw[67:71] = struct.pack("<I", header.crc32_alt(bytes(raw[:59])))
    assert header.crc32_alt(bytes(raw[:59])) != zlib.crc32(bytes(raw[:59]))
    assert header.parse(bytes(raw)).index == 1


def corrupt(offset, value, fix_crc=True):
    raw = bytearray(header.pack(1, 18, 100))
    raw[offset:offset + len(value)] = value
    if fix_crc:
        raw[67:71] = struct.pack("<I", zlib.crc32(bytes(raw[:59])))
    return bytes(raw)


@pytest.mark.parametrize("raw,message", [
    (b"\0" * 79, "shorter than the 80-byte header"),
    (corrupt(59, b"\0\0\0\0"), "bad magic"),
    (corrupt(12, b"\x65", fix_crc=False), "bad metadata checksum"),
    (corrupt(54, b"\x05"), "backend id 5"),
    (corrupt(55, struct.pack("<I", 0x10001)), "backend version"),
    (corrupt(20, b"\x03"), "unknown checksum type 3"),
])
def test_bad_headers(raw, message):
    with pytest.raises(ECInvalidFragmentMetadata, match=message):
        header.parse(raw, position=4)
    with pytest.raises(ECInvalidFragmentMetadata, match="position 4"):
        header.parse(raw, position=4)
