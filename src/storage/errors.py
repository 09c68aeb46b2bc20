"""The storage layer's exception tree. The HTTP layer maps these to statuses in one table."""


class StorageError(Exception):
    """Base of every error the chunk repository raises on purpose."""


class ChunkNotFound(StorageError):
    pass


class ChunkExists(StorageError):
    pass


class ChecksumMismatch(StorageError):
    pass


class SizeMismatch(StorageError):
    pass


class NoSpace(StorageError):
    pass


class PermissionDenied(StorageError):
    pass


class CorruptChunk(StorageError):
    """The chunk on disk is unusable as it stands (missing hash, short file)."""


class BadRequest(StorageError):
    """A client error detected above HTTP parsing (bad header, bad id)."""


class VolumeUnavailable(StorageError):
    """The liveness probe failed: the volume cannot serve."""
