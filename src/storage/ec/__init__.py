"""Erasure coding compatible with liberasurecode_rs_vand (RS over GF(2^16)).

``ECDriver`` mirrors pyeclib's driver; ``Codec`` adds the allocation-free
``encode_into`` / ``decode_into`` / ``reconstruct_into``.
"""
from storage.ec.codec import Codec
from storage.ec.driver import EC_TYPE, ECDriver
from storage.ec.errors import (ECBackendNotSupported, ECBadFragmentChecksum, ECDriverError,
                               ECInsufficientFragments, ECInvalidFragmentMetadata,
                               ECInvalidParameter)
from storage.ec.header import DEFAULT_LIBRARY_VERSION, HEADER_SIZE

__all__ = [
    "Codec", "ECDriver", "EC_TYPE", "DEFAULT_LIBRARY_VERSION", "HEADER_SIZE",
    "ECDriverError", "ECInvalidParameter", "ECBackendNotSupported",
    "ECInvalidFragmentMetadata", "ECBadFragmentChecksum", "ECInsufficientFragments",
]
