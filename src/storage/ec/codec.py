"""Reed-Solomon RS(k, m) over GF(2^16), byte-compatible with liberasurecode_rs_vand.

A segment of n bytes is cut into k data fragments of ``blocksize(n)`` bytes
(contiguous, zero-padded), m parity fragments are computed with the
generator matrix of ``gf.rs_vand_matrix``, and each fragment is an 80-byte
header followed by its payload. The ``*_into`` methods write into buffers
the caller owns (no per-segment allocation); the others allocate.

Decoding inverts the k x k submatrix of the first k available fragments;
the inverse (and the kernel tables built from it) is cached per erasure
pattern.
"""
import threading
import zlib

from storage import fast
from storage.ec import gf, header
from storage.ec.errors import (ECBadFragmentChecksum, ECInsufficientFragments, ECInvalidFragmentMetadata,
                               ECInvalidParameter)
from storage.ec.header import HEADER_SIZE

_PLAN_CACHE_LIMIT = 4096
_HEADER_CACHE_LIMIT = 256


class Codec:
    """RS(k, m) encoder/decoder. Thread-safe: several threads may encode or
    decode different segments with one Codec at once."""

    def __init__(self, k=6, m=3, chksum_type="none",
                 library_version=header.DEFAULT_LIBRARY_VERSION, gf16=None):
        """``gf16``: the region-arithmetic module (default: fast.load("gf16"),
        i.e. _fastpath.gf16 or its twin storage.pure.gf16)."""
        if not isinstance(k, int) or not isinstance(m, int) or k < 1 or m < 1 or k + m > 32:
            raise ECInvalidParameter(f"need integers k >= 1, m >= 1, k + m <= 32 (got k={k!r}, m={m!r})")
        if chksum_type not in header.CHKSUM_TYPES:
            raise ECInvalidParameter(
                f"checksum type {chksum_type!r} is not one of {sorted(header.CHKSUM_TYPES)}")
        if not isinstance(library_version, int) or not 0 <= library_version <= 0xFFFFFFFF:
            raise ECInvalidParameter(f"library version {library_version!r} is not a u32")
        self.k = k
        self.m = m
        self.n = k + m
        self.chksum_type = header.CHKSUM_TYPES[chksum_type]
        self.library_version = library_version
        self.generator = gf.rs_vand_matrix(k, m)
        self._gf16 = gf16 if gf16 is not None else fast.load("gf16")
        self._parity = self._gf16.Gf16Matrix(self.generator[k:])
        # One call per segment that does split, parity and headers with the GIL
        # released, so that threads encoding other segments run alongside
        # (None: a gf16 module without it, e.g. a kernel-forcing wrapper).
        self._encode_fragments = getattr(self._gf16, "encode_fragments", None)
        self._payload_crc = ((header.PAYLOAD_CRC_OFFSET, header.METADATA_SIZE,
                              header.METADATA_CRC_OFFSET)
                             if self.chksum_type == header.CHKSUM_CRC32 else None)
        self._headers = {}      # segment size -> (blocksize, the n headers' bytes)
        self._plans = {}
        self._local = threading.local()

    # -- sizes ---------------------------------------------------------------
    def blocksize(self, data_len):
        """Payload bytes per fragment for a segment of data_len bytes:
        the segment padded to a multiple of 2k bytes, divided by k."""
        return 2 * -(-data_len // (2 * self.k))

    def fragment_size(self, data_len):
        """Bytes of one fragment (header + payload) for a data_len-byte segment."""
        return HEADER_SIZE + self.blocksize(data_len)

    # -- encode --------------------------------------------------------------
    def encode_into(self, segment, fragments):
        """Encode ``segment`` (bytes-like) into k + m caller-owned writable
        buffers, each at least fragment_size(len(segment)) bytes; writes
        header + payload at the start of each. Returns the fragment size."""
        encode = self._encode_fragments
        if encode is not None:
            if type(fragments) is not list and type(fragments) is not tuple:
                fragments = list(fragments)      # iterated twice if the fast path fails
            try:
                size = memoryview(segment).nbytes
                shape = self._headers.get(size)
                if shape is None:
                    shape = self._header_template(size)
                return encode(self._parity, segment, fragments, shape[1], shape[0],
                              self._payload_crc)
            except (ValueError, TypeError, BufferError):
                pass    # bad arguments: the checked path below says which, in our terms
        return self._encode_checked(segment, fragments)

    def _header_template(self, size):
        """(blocksize, the n fragment headers of a size-byte segment), cached;
        with inline CRC32, encode_fragments fills the checksums in."""
        bs = self.blocksize(size)
        raw = b"".join(header.packed(i, bs, size, self.chksum_type, 0, self.library_version)
                       for i in range(self.n))
        if len(self._headers) >= _HEADER_CACHE_LIMIT:
            self._headers.clear()
        self._headers[size] = shape = (bs, raw)
        return shape

    def _encode_checked(self, segment, fragments):
        """encode_into one step at a time, each argument checked in Python."""
        data = memoryview(segment).cast("B")
        n = data.nbytes
        bs = self.blocksize(n)
        fsize = HEADER_SIZE + bs
        outs = self._output_views(fragments, self.n, fsize)
        payloads = [o[HEADER_SIZE:fsize] for o in outs]
        self._gf16.split_into(data, payloads[:self.k])
        if bs:
            self._gf16.gf16_matmul(self._parity, payloads[:self.k], payloads[self.k:])
        for i in range(self.n):
            self._write_header(outs[i], i, bs, n, payloads[i])
        return fsize

    def encode(self, segment):
        """Encode a segment; returns the k + m fragments as bytes."""
        fsize = self.fragment_size(memoryview(segment).nbytes)
        buf = bytearray(fsize * self.n)
        view = memoryview(buf)
        self.encode_into(segment, [view[i * fsize:(i + 1) * fsize] for i in range(self.n)])
        return [bytes(view[i * fsize:(i + 1) * fsize]) for i in range(self.n)]

    # -- decode --------------------------------------------------------------
    def decoded_size(self, fragments):
        """Original segment size recorded in a set of fragments (validated)."""
        return self._collect(fragments)[1]

    def decode_into(self, fragments, out):
        """Rebuild the segment from at least k fragments into the writable
        buffer ``out`` (at least the original size). Returns the number of
        bytes written (the original segment size)."""
        frags, n, bs = self._collect(fragments)
        dest = memoryview(out).cast("B")
        if dest.readonly:
            raise ECInvalidParameter("decode output buffer is read-only")
        if dest.nbytes < n:
            raise ECInvalidParameter(f"decode output buffer is {dest.nbytes} bytes, segment is {n}")
        k = self.k
        missing = [i for i in range(k) if i not in frags]
        if missing:
            survivors = tuple(sorted(frags)[:k])
            plan = self._plan(survivors, tuple(missing))
            scratch = self._scratch(len(missing) * bs)
            outputs = []
            for j, i in enumerate(missing):
                if (i + 1) * bs <= dest.nbytes:
                    outputs.append(dest[i * bs:(i + 1) * bs])
                else:
                    outputs.append(scratch[j * bs:(j + 1) * bs])
            self._gf16.gf16_matmul(plan, [frags[s][1] for s in survivors], outputs)
            for j, i in enumerate(missing):
                if (i + 1) * bs > dest.nbytes:
                    lo = min(i * bs, n)
                    hi = min(lo + bs, n)
                    self._gf16.split_into(outputs[j][:hi - lo], [dest[lo:hi]])
        split = self._gf16.split_into   # copies with the GIL released
        for i in range(k):
            if i in frags:
                lo = min(i * bs, n)
                hi = min(lo + bs, n)
                split(frags[i][1][:hi - lo], [dest[lo:hi]])
        return n

    def decode(self, fragments):
        """Rebuild the segment from at least k fragments; returns bytes."""
        frags, n, bs = self._collect(fragments)
        buf = bytearray(self.k * bs)
        self.decode_into(fragments, buf)
        return bytes(memoryview(buf)[:n])

    # -- reconstruct ---------------------------------------------------------
    def reconstruct_into(self, fragments, indexes, outs):
        """Rebuild the fragments with the given indexes (data or parity) from
        k others, each written (header + payload) into the matching writable
        buffer of ``outs``. Returns the fragment size."""
        targets = [self._check_index(i) for i in indexes]
        if len(set(targets)) != len(targets):
            raise ECInvalidParameter(f"fragment indexes to rebuild repeat: {targets}")
        frags, n, bs = self._collect(fragments)
        available = [i for i in sorted(frags) if i not in targets]
        if len(available) < self.k:
            raise ECInsufficientFragments(
                f"rebuilding {targets} needs {self.k} other fragments, have {len(available)} "
                f"({available})")
        survivors = tuple(available[:self.k])
        fsize = HEADER_SIZE + bs
        views = self._output_views(outs, len(targets), fsize)
        payloads = [v[HEADER_SIZE:fsize] for v in views]
        if targets and bs:
            plan = self._plan(survivors, tuple(targets))
            self._gf16.gf16_matmul(plan, [frags[s][1] for s in survivors], payloads)
        for t, v, p in zip(targets, views, payloads):
            self._write_header(v, t, bs, n, p)
        return fsize

    def reconstruct(self, fragments, indexes):
        """Rebuild fragments by index; returns them as bytes, ordered by index."""
        targets = sorted(self._check_index(i) for i in indexes)
        frags, n, bs = self._collect(fragments)
        fsize = HEADER_SIZE + bs
        bufs = [bytearray(fsize) for _ in targets]
        self.reconstruct_into(fragments, targets, bufs)
        return [bytes(b) for b in bufs]

    # -- helpers -------------------------------------------------------------
    def fragments_needed(self, missing, exclude=()):
        """The first k fragment indexes usable to rebuild ``missing`` without
        the ``exclude`` ones."""
        unusable = {self._check_index(i) for i in missing} | {self._check_index(i) for i in exclude}
        usable = [i for i in range(self.n) if i not in unusable]
        if len(usable) < self.k:
            raise ECInsufficientFragments(
                f"only {len(usable)} fragments left ({usable}) once {sorted(unusable)} are "
                f"excluded; need {self.k}")
        return usable[:self.k]

    def _check_index(self, i):
        if not isinstance(i, int) or not 0 <= i < self.n:
            raise ECInvalidParameter(f"fragment index {i!r} is not in 0..{self.n - 1}")
        return i

    def _output_views(self, buffers, count, fsize):
        buffers = list(buffers)
        if len(buffers) != count:
            raise ECInvalidParameter(f"need {count} output buffers, got {len(buffers)}")
        views = []
        for i, b in enumerate(buffers):
            v = memoryview(b).cast("B")
            if v.readonly:
                raise ECInvalidParameter(f"output buffer {i} is read-only")
            if v.nbytes < fsize:
                raise ECInvalidParameter(f"output buffer {i} is {v.nbytes} bytes, fragments are {fsize}")
            views.append(v)
        return views

    def _write_header(self, view, index, bs, n, payload):
        crc = zlib.crc32(payload) if self.chksum_type == header.CHKSUM_CRC32 else 0
        view[:HEADER_SIZE] = header.packed(index, bs, n, self.chksum_type, crc,
                                           self.library_version)

    def _scratch(self, size):
        buf = getattr(self._local, "scratch", None)
        if buf is None or len(buf) < size:
            buf = self._local.scratch = bytearray(size)
        return memoryview(buf)

    def _collect(self, fragments):
        """Parse and cross-check fragment headers; fragments whose payload
        fails its inline CRC32 are left out. Returns ({index: (header,
        payload view, position)}, original size, blocksize)."""
        if isinstance(fragments, (bytes, bytearray, memoryview)):
            raise ECInvalidParameter("expected a list of fragments, got a single bytes-like object")
        frags = {}
        corrupt = []
        first = None
        for pos, frag in enumerate(fragments):
            hdr = header.parse(frag, pos)
            view = memoryview(frag).cast("B")
            if hdr.index >= self.n:
                raise ECInvalidFragmentMetadata(
                    f"fragment index {hdr.index} is not in 0..{self.n - 1} (fragment at position {pos})")
            if view.nbytes != HEADER_SIZE + hdr.size:
                raise ECInvalidFragmentMetadata(
                    f"fragment is {view.nbytes} bytes but its header says {HEADER_SIZE} + {hdr.size} "
                    f"(fragment at position {pos})")
            if hdr.size != self.blocksize(hdr.orig_data_size):
                raise ECInvalidFragmentMetadata(
                    f"payload size {hdr.size} does not fit original size {hdr.orig_data_size} "
                    f"with k={self.k} (fragment at position {pos})")
            if first is None:
                first = (hdr, pos)
            elif hdr.orig_data_size != first[0].orig_data_size:
                raise ECInvalidFragmentMetadata(
                    f"fragments from different segments: position {pos} has original size "
                    f"{hdr.orig_data_size}, position {first[1]} has {first[0].orig_data_size}")
            if hdr.index in frags:
                continue
            payload = view[HEADER_SIZE:]
            try:
                header.check_payload(hdr, payload, pos)
            except ECBadFragmentChecksum as exc:
                corrupt.append(str(exc))      # usable only if enough others remain
                continue
            frags[hdr.index] = (hdr, payload, pos)
        if len(frags) < self.k and corrupt:
            raise ECBadFragmentChecksum(
                f"{len(frags)} intact fragments, need {self.k}; " + "; ".join(corrupt))
        if len(frags) < self.k:
            raise ECInsufficientFragments(
                f"{len(frags)} distinct fragments given ({sorted(frags)}), need {self.k}")
        return frags, first[0].orig_data_size, first[0].size

    def _plan(self, survivors, targets):
        """Kernel matrix rebuilding ``targets`` from ``survivors`` (cached)."""
        key = (survivors, targets)
        plan = self._plans.get(key)
        if plan is None:
            inverse = gf.invert([self.generator[s] for s in survivors])
            rows = []
            for t in targets:
                rows.append(inverse[t] if t < self.k else gf.matmul([self.generator[t]], inverse)[0])
            plan = self._gf16.Gf16Matrix(rows)
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        return plan
