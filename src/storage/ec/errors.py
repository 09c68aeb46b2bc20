"""Exceptions of the EC codec, named as pyeclib names them so callers can
switch; every message says what is wrong and with which fragment."""


class ECDriverError(Exception):
    """Base class of every codec error."""


class ECInvalidParameter(ECDriverError):
    """A bad argument: k, m, checksum type, index, buffer size..."""


class ECBackendNotSupported(ECDriverError):
    """An ec_type other than liberasurecode_rs_vand."""


class ECInvalidFragmentMetadata(ECDriverError):
    """A fragment whose header is not valid or does not match the others."""


class ECBadFragmentChecksum(ECDriverError):
    """A fragment whose payload does not match its inline CRC32."""


class ECInsufficientFragments(ECDriverError):
    """Fewer than k usable fragments."""
