"""OpenIO's layout of an erasure-coded object on chunks: the arithmetic only.

An object is cut into metachunks of at most ``metachunk_limit`` bytes; a
metachunk of L bytes into 1 MiB segments (the last one shorter, never
merged into the one before); segment j is encoded into k + m fragments and
fragment i is appended to chunk i of the metachunk (position ``"N.i"``).
Every full segment gives fragments of ``fragment_size(SEGMENT_SIZE)`` bytes
(174844 for k=6), so fragment j of a chunk starts at j * that.

All offsets are in bytes; ranges are inclusive [start, end] as in HTTP.
"""
from storage.ec.header import HEADER_SIZE

SEGMENT_SIZE = 1 << 20
MIB = 1 << 20


class Layout:
    """Sizes and offsets for RS(k, m) with OpenIO's segment size."""

    def __init__(self, k=6, m=3, segment_size=SEGMENT_SIZE):
        if k < 1 or m < 1 or segment_size < 2 * k:
            raise ValueError(f"bad layout k={k} m={m} segment_size={segment_size}")
        self.k = k
        self.m = m
        self.n = k + m
        self.segment_size = segment_size
        self.full_fragment = self.fragment_size(segment_size)

    def blocksize(self, segment_len):
        """Payload bytes of each fragment of a segment_len-byte segment."""
        return 2 * -(-segment_len // (2 * self.k))

    def fragment_size(self, segment_len):
        """Header + payload bytes of each fragment of a segment_len-byte segment."""
        return HEADER_SIZE + self.blocksize(segment_len)

    # -- one metachunk -------------------------------------------------------
    def segment_count(self, mc_size):
        """Segments of a metachunk of mc_size bytes (0 for an empty one)."""
        return -(-mc_size // self.segment_size)

    def segment_span(self, mc_size, j):
        """(offset, length) of segment j in the metachunk's data."""
        off = j * self.segment_size
        if not 0 <= off < mc_size:
            raise IndexError(f"segment {j} is not in a {mc_size}-byte metachunk")
        return off, min(self.segment_size, mc_size - off)

    def fragment_span(self, mc_size, j):
        """(offset, length) of segment j's fragment in each chunk."""
        _, seg_len = self.segment_span(mc_size, j)
        return j * self.full_fragment, self.fragment_size(seg_len)

    def chunk_size(self, mc_size):
        """Bytes of each chunk of a metachunk of mc_size bytes:
        floor(L / S) * F + (80 + blocksize(r) if r else 0), r = L mod S."""
        full, rest = divmod(mc_size, self.segment_size)
        return full * self.full_fragment + (self.fragment_size(rest) if rest else 0)

    def fragment_range(self, start, end):
        """The chunk byte range [a, b] holding metachunk bytes [start, end]
        (the spec's formula; b may pass the end of a short last fragment)."""
        if not 0 <= start <= end:
            raise ValueError(f"bad range [{start}, {end}]")
        s = self.segment_size
        return (start // s) * self.full_fragment, (end // s + 1) * self.full_fragment - 1

    def segments_for(self, mc_size, start, end):
        """Segment indexes covering metachunk bytes [start, end] (clipped)."""
        if mc_size == 0 or start > end or start >= mc_size:
            return range(0)
        end = min(end, mc_size - 1)
        return range(start // self.segment_size, end // self.segment_size + 1)

    # -- metachunks of an object ---------------------------------------------
    def metachunk_limit(self, chunk_size):
        """Most data bytes in one metachunk for a chunk size (data bytes per
        chunk): k * chunk_size rounded down to whole segments, at least one."""
        if chunk_size <= 0:
            raise ValueError(f"chunk size must be positive, got {chunk_size}")
        return max(self.segment_size, self.k * chunk_size // self.segment_size * self.segment_size)

    def split(self, size, limit):
        """[(offset, length)] of the metachunks of a size-byte object; an
        empty object has one empty metachunk."""
        if size == 0:
            return [(0, 0)]
        return [(off, min(limit, size - off)) for off in range(0, size, limit)]


def locate(metachunks, start, end):
    """For object bytes [start, end] and the metachunks' (offset, length) in
    order, yield (metachunk number, local start, local end) of each part."""
    for number, (off, length) in enumerate(metachunks):
        lo, hi = max(start, off), min(end, off + length - 1)
        if lo <= hi:
            yield number, lo - off, hi - off
