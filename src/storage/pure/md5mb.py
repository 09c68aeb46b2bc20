"""Pure-Python twin of ``_fastpath.md5mb`` (the executable spec).

Same names, signatures and exceptions; every digest is hashlib's. There are
no lanes here: the only kernel is "scalar".
"""
import hashlib
import os

KERNEL_ENV = "STORAGE_NODE_MD5_KERNEL"
_kernel = "scalar"


def available_kernels():
    """Names of the kernels this implementation can run, fastest first."""
    return ("scalar",)


def _set_kernel(name):
    """Switch the kernel of the whole process (for tests and benchmarks);
    ValueError unless ``name`` is in available_kernels()."""
    global _kernel
    if name not in available_kernels():
        raise ValueError(f"MD5 kernel {name!r}: not one of {available_kernels()}")
    _kernel = name


def kernel():
    """The kernel updates use: always 'scalar' here."""
    return _kernel


def _init_kernel():
    # The compiled module's names are accepted (an environment set for it must
    # not break the twin), but hashlib does the work whatever they say.
    forced = os.environ.get(KERNEL_ENV, "")
    if forced not in ("", "avx512", "avx2", "scalar"):
        raise ValueError(f"{KERNEL_ENV}={forced!r}: not one of ('avx512', 'avx2', 'scalar')")


_init_kernel()


def engine_stats():
    """Batches run by busy lanes: 9 counts, all zero (no engine here)."""
    return (0,) * 9


class Md5:
    """MD5 with the surface of ``hashlib.md5()`` (a thin wrapper of it)."""

    name = "md5"
    digest_size = 16
    block_size = 64

    def __init__(self, data=b""):
        self._h = hashlib.md5(data)

    def update(self, data):
        """Hash the bytes of ``data`` (any bytes-like object)."""
        self._h.update(data)

    def digest(self):
        """The 16-byte digest of the bytes so far (the object stays usable)."""
        return self._h.digest()

    def hexdigest(self):
        """The digest as 32 lower-case hex digits."""
        return self._h.hexdigest()

    def copy(self):
        """An independent Md5 with the same state."""
        other = Md5.__new__(Md5)
        other._h = self._h.copy()
        return other


def md5_many(messages):
    """The 16-byte MD5 digests of a sequence of bytes-like messages."""
    return [hashlib.md5(m).digest() for m in messages]
