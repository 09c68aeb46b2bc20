"""An ECDriver shaped like pyeclib's, so code written for pyeclib can switch.

Only ``liberasurecode_rs_vand`` is provided (byte-compatible with
liberasurecode 1.6-1.8). The allocation-free API is on ``driver.codec``
(``encode_into``, ``decode_into``, ``reconstruct_into``).
"""
from storage.ec import header
from storage.ec.codec import Codec
from storage.ec.errors import ECBackendNotSupported, ECInvalidParameter

EC_TYPE = "liberasurecode_rs_vand"


class ECDriver:
    """pyeclib-like facade over Codec.

    ``ECDriver(k=6, m=3, ec_type="liberasurecode_rs_vand", chksum_type="none",
    library_version=0x010800)``; chksum_type is "none" or "inline_crc32";
    library_version is the liberasurecode version written into headers.
    """

    def __init__(self, *, k=6, m=3, ec_type=EC_TYPE, chksum_type="none",
                 library_version=header.DEFAULT_LIBRARY_VERSION, validate=False):
        if ec_type != EC_TYPE:
            raise ECBackendNotSupported(f"ec_type {ec_type!r} is not supported; only {EC_TYPE!r}")
        self.ec_type = ec_type
        self.chksum_type = chksum_type
        self.validate = validate
        self.codec = Codec(k, m, chksum_type, library_version)
        self.k = k
        self.m = m

    def __repr__(self):
        return f"ECDriver(ec_type={self.ec_type!r}, k={self.k}, m={self.m})"

    def close(self):
        """Nothing to release; present for pyeclib compatibility."""

    def encode(self, data_bytes):
        """Encode one segment; returns k + m fragments (bytes), data first."""
        return self.codec.encode(data_bytes)

    def decode(self, fragment_payloads, ranges=None, force_metadata_checks=False):
        """Rebuild a segment from at least k fragments. With ``ranges``
        (a list of inclusive (start, end) byte offsets), return a list of
        those slices instead. Headers are always checked."""
        data = self.codec.decode(fragment_payloads)
        if ranges is None:
            return data
        out = []
        for rng in ranges:
            start, end = rng
            if not (0 <= start <= end < len(data)):
                raise ECInvalidParameter(f"range {rng!r} is outside the {len(data)}-byte segment")
            out.append(data[start:end + 1])
        return out

    def reconstruct(self, available_fragment_payloads, missing_fragment_indexes):
        """Rebuild the fragments with the given indexes; returns them as
        bytes, ordered by fragment index."""
        return self.codec.reconstruct(available_fragment_payloads, missing_fragment_indexes)

    def fragments_needed(self, reconstruction_indexes, exclude_indexes=None):
        """Indexes of the k fragments to read to rebuild the given ones."""
        return self.codec.fragments_needed(reconstruction_indexes, exclude_indexes or ())

    def min_parity_fragments_needed(self):
        """Parity fragments needed to survive one loss (1 for RS)."""
        return 1

    def get_metadata(self, fragment, formatted=0):
        """The fragment's metadata: its 59 raw header bytes, or with
        ``formatted`` a dict like pyeclib's (with chksum_mismatch computed)."""
        hdr = header.parse(fragment)
        view = memoryview(fragment).cast("B")
        if not formatted:
            return bytes(view[:header.METADATA_SIZE])
        payload = view[header.HEADER_SIZE:header.HEADER_SIZE + hdr.size]
        if hdr.chksum_type == header.CHKSUM_CRC32:
            chksum = hdr.chksum.to_bytes(4, "little").hex()
            try:
                header.check_payload(hdr, payload)
                mismatch = 0
            except header.ECBadFragmentChecksum:
                mismatch = 1
        else:
            chksum, mismatch = "", 0
        return {
            "index": hdr.index,
            "size": hdr.size,
            "orig_data_size": hdr.orig_data_size,
            "chksum_type": header.CHKSUM_NAMES[hdr.chksum_type],
            "chksum": chksum,
            "chksum_mismatch": mismatch,
            "backend_id": EC_TYPE,
            "backend_version": hdr.backend_version,
        }

    def get_segment_info(self, data_len, segment_size):
        """How pyeclib cuts data_len bytes into segments of segment_size:
        dict of segment_size, last_segment_size, fragment_size,
        last_fragment_size (headers included) and num_segments. A last
        segment shorter than 2k bytes is merged into the one before."""
        if not isinstance(data_len, int) or data_len < 0:
            raise ECInvalidParameter(f"data length {data_len!r} must be a non-negative integer")
        if not isinstance(segment_size, int) or segment_size <= 0:
            raise ECInvalidParameter(f"segment size {segment_size!r} must be a positive integer")
        c = self.codec
        min_segment = 2 * c.k     # liberasurecode's minimum encode size
        num = -(-data_len // segment_size)
        if num == 2 and data_len < segment_size + min_segment:
            num = 1
        if num == 1:
            segment_size = last_segment = data_len
            fragment = last_fragment = c.fragment_size(data_len)
        else:
            fragment = c.fragment_size(segment_size)
            last_segment = data_len - segment_size * (num - 1)
            if last_segment < min_segment:
                num -= 1
                last_segment += segment_size
            last_fragment = c.fragment_size(last_segment)
        return {
            "segment_size": segment_size,
            "last_segment_size": last_segment,
            "fragment_size": fragment,
            "last_fragment_size": last_fragment,
            "num_segments": num,
        }
