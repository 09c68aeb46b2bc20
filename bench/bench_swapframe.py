"""SWAP frames: the compiled codec next to its pure twin and plain ``struct`` code.

    .venv/bin/python -m pytest bench/bench_swapframe.py --benchmark-enable -q \
        --benchmark-columns=mean,ops,rounds

Each benchmark packs or unpacks one frame, so OPS is frames per second. Two
frames: PATH_DETAILS with 1,000 small records (one group UUID, a 20-byte path,
kind, size, mtime: the answer to a batched look-up) and FILE_SEGMENT with a
512 KiB payload (what a stream sends). Unpacking is measured with the frame fed
whole and in 64 KiB reads. The ``struct`` rows are what straightforward code
would do for that one message type (header, then each field with
``struct.pack``/``unpack_from``), with the same results: UUID objects (reused
while the group repeats, as the reader does), str paths, and the payload as a
memoryview where the data allows it. Compare rows within a group (ratios; the
machine is shared).
"""
import struct
import uuid

import pytest

from _fastpath import swapframe as fast
from storage.pure import swapframe as pure
from storage.swap.messages import SEGMENTS, MessageType

KiB = 1 << 10
GROUP = uuid.uuid5(uuid.NAMESPACE_DNS, "chunks.example")
PATHS = [f"ABC/ABCDEF{i:010d}" for i in range(1000)]
DETAILS = [(GROUP, p, 0, 1048576 + i, 1700000000000 + i) for i, p in enumerate(PATHS)]
PAYLOAD = bytes(range(256)) * (512 * KiB // 256)
SEGMENT = [(7, 524288 * 3, PAYLOAD)]

DETAILS_WIRE = fast.encode(SEGMENTS, MessageType.PATH_DETAILS, DETAILS)
SEGMENT_WIRE = fast.encode(SEGMENTS, MessageType.FILE_SEGMENT, SEGMENT)
SEGMENT_READS = [SEGMENT_WIRE[i:i + 64 * KiB] for i in range(0, len(SEGMENT_WIRE), 64 * KiB)]

# -- the plain struct reference --------------------------------------------------

_HEAD = struct.Struct(">ihh")
_LEN16 = struct.Struct(">h")
_KIND_SIZE_MTIME = struct.Struct(">iqq")
_FID_OFFSET_LEN = struct.Struct(">qqi")


def struct_pack_details(records):
    parts = []
    for group, path, kind, size, mtime in records:
        p = path.encode("utf-8", "surrogateescape")
        parts += (group.bytes, _LEN16.pack(len(p)), p, _KIND_SIZE_MTIME.pack(kind, size, mtime))
    body = b"".join(parts)
    return _HEAD.pack(4 + len(body), MessageType.PATH_DETAILS, len(records)) + body


def struct_unpack_details(frame):
    length, t, reps = _HEAD.unpack_from(frame, 0)
    pos = 8
    records = []
    last, group = None, None
    for _ in range(reps):
        raw = frame[pos:pos + 16]
        if raw != last:
            last, group = raw, uuid.UUID(bytes=raw)
        n = _LEN16.unpack_from(frame, pos + 16)[0]
        path = frame[pos + 18:pos + 18 + n].decode("utf-8", "surrogateescape")
        pos += 18 + n
        kind, size, mtime = _KIND_SIZE_MTIME.unpack_from(frame, pos)
        pos += 20
        records.append((group, path, kind, size, mtime))
    return t, records


def struct_pack_segment(fid, offset, data):
    return (_HEAD.pack(4 + 20 + len(data), MessageType.FILE_SEGMENT, 1)
            + _FID_OFFSET_LEN.pack(fid, offset, len(data)) + data)


def struct_unpack_segment(frame):
    length, t, reps = _HEAD.unpack_from(frame, 0)
    fid, offset, n = _FID_OFFSET_LEN.unpack_from(frame, 8)
    return t, [(fid, offset, memoryview(frame).toreadonly()[28:28 + n])]


def struct_unpack_segment_reads(reads):
    buf = bytearray()  # a new one per frame: the payload view keeps it
    for data in reads:
        buf += data
    return struct_unpack_segment(buf)


# -- benchmarks ---------------------------------------------------------------------

TWINS = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure")]


def _reader(mod):
    """A reader kept across rounds, as a connection keeps one."""
    reader = mod.FrameReader(SEGMENTS)

    def read(reads):
        for data in reads:
            reader.feed(data)
        return reader.next()
    return read


@pytest.mark.parametrize("mod", TWINS)
def test_pack_details(benchmark, mod):
    benchmark.group = "pack PATH_DETAILS, 1,000 records"
    assert benchmark(mod.encode, SEGMENTS, MessageType.PATH_DETAILS, DETAILS) == DETAILS_WIRE


@pytest.mark.parametrize("mod", TWINS)
def test_pack_details_by_segment(benchmark, mod):
    """The writer's segment methods, one Python call per value."""
    benchmark.group = "pack PATH_DETAILS, 1,000 records"

    w = mod.FrameWriter()  # kept across rounds, as a connection keeps one

    def pack():
        w.begin(MessageType.PATH_DETAILS)
        for group, path, kind, size, mtime in DETAILS:
            w.uuid(group)
            w.string(path)
            w.int32(kind)
            w.int64(size)
            w.int64(mtime)
            w.end_record()
        return w.finish()
    assert benchmark(pack) == DETAILS_WIRE


def test_pack_details_struct(benchmark):
    benchmark.group = "pack PATH_DETAILS, 1,000 records"
    assert benchmark(struct_pack_details, DETAILS) == DETAILS_WIRE


@pytest.mark.parametrize("mod", TWINS)
def test_unpack_details(benchmark, mod):
    benchmark.group = "unpack PATH_DETAILS, 1,000 records"
    t, records = benchmark(_reader(mod), [DETAILS_WIRE])
    assert records == DETAILS


def test_unpack_details_struct(benchmark):
    benchmark.group = "unpack PATH_DETAILS, 1,000 records"
    t, records = benchmark(struct_unpack_details, DETAILS_WIRE)
    assert records == DETAILS


@pytest.mark.parametrize("mod", TWINS)
def test_pack_segment(benchmark, mod):
    benchmark.group = "pack FILE_SEGMENT, 512 KiB"
    assert len(benchmark(mod.encode, SEGMENTS, MessageType.FILE_SEGMENT, SEGMENT)) == len(SEGMENT_WIRE)


def test_pack_segment_struct(benchmark):
    benchmark.group = "pack FILE_SEGMENT, 512 KiB"
    assert benchmark(struct_pack_segment, *SEGMENT[0]) == SEGMENT_WIRE


@pytest.mark.parametrize("mod", TWINS)
def test_unpack_segment_whole(benchmark, mod):
    benchmark.group = "unpack FILE_SEGMENT, 512 KiB, fed whole"
    t, [(fid, offset, data)] = benchmark(_reader(mod), [SEGMENT_WIRE])
    assert data == PAYLOAD


def test_unpack_segment_whole_struct(benchmark):
    benchmark.group = "unpack FILE_SEGMENT, 512 KiB, fed whole"
    t, [(fid, offset, data)] = benchmark(struct_unpack_segment, SEGMENT_WIRE)
    assert data == PAYLOAD


@pytest.mark.parametrize("mod", TWINS)
def test_unpack_segment_reads(benchmark, mod):
    benchmark.group = "unpack FILE_SEGMENT, 512 KiB, 64 KiB reads"
    t, [(fid, offset, data)] = benchmark(_reader(mod), SEGMENT_READS)
    assert data == PAYLOAD


def test_unpack_segment_reads_struct(benchmark):
    benchmark.group = "unpack FILE_SEGMENT, 512 KiB, 64 KiB reads"
    t, [(fid, offset, data)] = benchmark(struct_unpack_segment_reads, SEGMENT_READS)
    assert data == PAYLOAD
