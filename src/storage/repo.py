"""The chunk repository: the one seam between request handlers and the filesystem.

Layout (spec rawx.md section 3): ``docroot/`` + ``hash_depth`` levels of ``hash_width``
characters of the upper-case chunk id + ``/ID``. A chunk being written is
``<final>.pending``; it becomes visible only by an atomic no-replace rename after its
data and xattrs are written.

Stale ``.pending`` files: the reference leaves them behind when it dies mid-upload, and
every later PUT of that id gets 409 forever. Here the writer holds an exclusive
``flock`` on its pending inode for its whole life, and the inode only gets the
``.pending`` name once locked (it is created unnamed with O_TMPFILE, locked, then linked
in). A writer that finds a ``.pending`` name whose inode nobody has locked knows its
owner is dead, and reaps it. Locks vanish with their process, so this holds across
SIGKILL, restarts and several worker processes.
"""
import errno
import fcntl
import logging
import os
import stat
import time

from storage.errors import ChunkExists, ChunkNotFound, NoSpace, PermissionDenied, StorageError
from storage.fast import load

streamio = load("streamio")
log = logging.getLogger(__name__)

PENDING_SUFFIX = ".pending"
NON_OPTIMAL_DIR = "non_optimal_placement"
_HEX_UPPER = frozenset("0123456789ABCDEF")


def _is_hex_upper(name):
    return all(c in _HEX_UPPER for c in name)
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def map_os_error(exc, what):
    """Turn an OSError from the filesystem into the storage exception tree."""
    if exc.errno in _SPACE_ERRNOS:
        return NoSpace(f"{what}: {os.strerror(exc.errno)}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{what}: {os.strerror(exc.errno)}")
    if exc.errno == errno.ENOENT:
        return ChunkNotFound(what)
    return StorageError(f"{what}: {exc.strerror or exc}")


class FsChunkRepo:
    """Chunks as files with extended attributes under one docroot."""

    def __init__(self, docroot, hash_width=3, hash_depth=1, fsync=False, fsync_dir=False,
                 fallocate=False):
        self.docroot = docroot.rstrip("/") or "/"
        self.hash_width = hash_width
        self.hash_depth = hash_depth
        self.fsync = fsync
        self.fsync_dir = fsync_dir
        self.fallocate = fallocate
        # os.link only uses linkat(AT_SYMLINK_FOLLOW), needed to give an O_TMPFILE inode
        # a name through /proc/self/fd, when it is handed a directory fd.
        self.root_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def chunk_dir(self, chunk_id):
        """Directory holding ``chunk_id`` (already upper-case)."""
        parts = [self.docroot]
        width = self.hash_width
        for level in range(self.hash_depth):
            parts.append(chunk_id[level * width:(level + 1) * width])
        return "/".join(parts)

    @property
    def layout(self):
        """(docroot, hash_width, hash_depth): where ``chunk_path`` puts a chunk, for the
        compiled GET path that opens chunks without calling back into Python."""
        return self.docroot, self.hash_width, self.hash_depth

    def chunk_path(self, chunk_id):
        if self.hash_depth == 1:  # the usual layout, on every request: keep it short
            return f"{self.docroot}/{chunk_id[:self.hash_width]}/{chunk_id}"
        return f"{self.chunk_dir(chunk_id)}/{chunk_id}"

    def writer(self, chunk_id, size_hint=None):
        """Start writing a new chunk. Raises ChunkExists (409) if it exists or is being
        written by a live writer."""
        return ChunkWriter(self, chunk_id, size_hint)

    def reader(self, chunk_id, nofollow=False):
        """Open a chunk for reading. Raises ChunkNotFound; with ``nofollow``, a chunk
        that is a symbolic link raises PermissionDenied (admin protocols never follow
        a link out of the volume)."""
        return ChunkReader(self.chunk_path(chunk_id), nofollow)

    def delete(self, chunk_id, own_attr=None):
        """Unlink a chunk; with ``own_attr``, first remove that xattr from the inode
        (a shallow copy's full-path key: the other names keep the inode)."""
        path = self.chunk_path(chunk_id)
        try:
            if own_attr:
                try:
                    os.removexattr(path, own_attr, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno != errno.ENODATA:
                        raise
            os.unlink(path)
        except OSError as exc:
            raise map_os_error(exc, chunk_id) from None

    def set_attrs(self, chunk_id, attrs):
        """Write xattrs ({name: bytes}) on an existing chunk."""
        try:
            fd = os.open(self.chunk_path(chunk_id), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise map_os_error(exc, chunk_id) from None
        try:
            streamio.write_xattrs(fd, attrs)
        except OSError as exc:
            raise map_os_error(exc, f"setxattr {chunk_id}") from None
        finally:
            os.close(fd)

    def link(self, src_id, dst_id):
        """Give chunk ``src_id``'s inode the name ``dst_id`` (a shallow copy)."""
        src, dst = self.chunk_path(src_id), self.chunk_path(dst_id)
        if not os.path.isfile(src):
            raise ChunkNotFound(src_id)
        for attempt in (0, 1):
            try:
                os.link(src, dst)
                return
            except FileExistsError:
                raise ChunkExists(dst_id) from None
            except FileNotFoundError:
                if attempt or not os.path.exists(src):
                    raise ChunkNotFound(src_id) from None
                os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            except OSError as exc:
                raise map_os_error(exc, f"link {dst_id}") from None

    def mark_non_optimal(self, chunk_id, now=None):
        """Symlink ``non_optimal_placement/<hash dirs>/<ID>.0.<ts>`` to the chunk.
        Returns False (and changes nothing) when an entry for the id exists."""
        parts = self._hash_parts(chunk_id)
        directory = os.path.join(self.docroot, NON_OPTIMAL_DIR, *parts)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            prefix = chunk_id + "."
            if any(name.startswith(prefix) for name in os.listdir(directory)):
                return False
            target = "../" * (self.hash_depth + 1) + "/".join(parts + [chunk_id])
            stamp = int(time.time() if now is None else now)
            os.symlink(target, os.path.join(directory, f"{chunk_id}.0.{stamp}"))
        except FileExistsError:
            return False
        except OSError as exc:
            raise map_os_error(exc, "non-optimal placement") from None
        return True

    def _hash_parts(self, chunk_id):
        width = self.hash_width
        return [chunk_id[i * width:(i + 1) * width] for i in range(self.hash_depth)]

    def leaf_dirs(self):
        """Relative paths of the leaf hash directories, in hex order ("" when the
        layout has no hash directory)."""
        return self._leaf_dirs()

    def chunk_ids_in(self, leaf):
        """The chunk ids in leaf hash directory ``leaf``, sorted; [] if it is gone."""
        directory = os.path.join(self.docroot, leaf) if leaf else self.docroot
        try:
            names = os.listdir(directory)
        except OSError:
            return []
        return sorted(n for n in names if 24 <= len(n) <= 64 and _is_hex_upper(n))

    def _leaf_dirs(self, base="", level=0):
        if level == self.hash_depth:
            yield base
            return
        try:
            names = os.listdir(os.path.join(self.docroot, base) if base else self.docroot)
        except OSError:
            return
        width = self.hash_width
        for name in sorted(n for n in names if len(n) == width and _is_hex_upper(n)):
            yield from self._leaf_dirs(f"{base}/{name}" if base else name, level + 1)

    def list_chunks(self, start_after, wanted):
        """Chunk ids from whole leaf dirs, starting at the leaf dir of ``start_after``
        (a chunk id or a leaf dir path), until at least ``wanted`` are collected.
        -> (ids, truncated, marker of the next leaf dir or "")."""
        start = ""
        if start_after:
            if len(start_after) >= 24 and _is_hex_upper(start_after):
                start = "/".join(self._hash_parts(start_after))
            else:
                start = start_after
        ids = []
        leaves = self._leaf_dirs()
        for leaf in leaves:
            if leaf < start:
                continue
            if len(ids) >= wanted:
                return ids, True, leaf
            ids.extend(self.chunk_ids_in(leaf))
        return ids, False, ""


def _reap_stale_pending(pending):
    """Remove ``pending`` if no live writer holds it. True if the name is now free."""
    try:
        fd = os.open(pending, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it: a genuine concurrent PUT
        # We hold the dead writer's inode: make sure the name still points at it
        # (only a lock holder may unlink a pending name, so it cannot change under us).
        held = os.fstat(fd)
        try:
            named = os.stat(pending, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            return False
        os.unlink(pending)
        log.warning("reaped stale pending file %s (its writer died)", pending)
        return True
    finally:
        os.close(fd)


class ChunkWriter:
    """A chunk being written. Making one only checks that the chunk does not exist
    (a cheap early 409); ``open()`` creates the pending file, which costs an inode
    allocation (close to a millisecond of kernel time on some filesystems), so callers
    may run it off their event loop. ``fd`` is then used by the streaming fast path;
    ``write`` is the plain path. ``commit`` makes the chunk visible; ``abort`` leaves
    nothing of it on disk."""

    def __init__(self, repo, chunk_id, size_hint=None):
        self.repo = repo
        self.chunk_id = chunk_id
        self.path = repo.chunk_path(chunk_id)
        self.pending = self.path + PENDING_SUFFIX
        self.fd = -1
        self.size = 0
        self.size_hint = size_hint
        self._named = False
        self._aborted = False
        if os.path.lexists(self.path):
            raise ChunkExists(chunk_id)

    @property
    def opened(self):
        return self.fd >= 0

    def open(self):
        """Create the locked pending file. Raises ChunkExists if a live writer has it."""
        if self._aborted:
            raise StorageError("writer already aborted")
        directory = os.path.dirname(self.path)
        try:
            self.fd = self._create(directory)
        except FileNotFoundError:
            try:
                os.makedirs(directory, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise map_os_error(exc, f"mkdir {directory}") from None
            self.fd = self._create(directory)
        if self.repo.fallocate and self.size_hint:
            try:
                os.posix_fallocate(self.fd, 0, self.size_hint)
            except OSError as exc:
                self.abort()
                raise map_os_error(exc, "fallocate") from None

    def _create(self, directory):
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise map_os_error(exc, f"create in {directory}") from None
            return self._create_named()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for attempt in (0, 1):
                try:
                    os.link(f"/proc/self/fd/{fd}", self.pending,
                            src_dir_fd=self.repo.root_fd, follow_symlinks=True)
                    break
                except FileExistsError:
                    if attempt or not _reap_stale_pending(self.pending):
                        raise ChunkExists(self.chunk_id) from None
        except ChunkExists:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise map_os_error(exc, f"link {self.pending}") from None
        self._named = True
        return fd

    def _create_named(self):
        """Fallback for filesystems without O_TMPFILE: O_EXCL create, then lock."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for attempt in (0, 1):
            try:
                fd = os.open(self.pending, flags, 0o644)
                break
            except FileExistsError:
                if attempt or not _reap_stale_pending(self.pending):
                    raise ChunkExists(self.chunk_id) from None
            except OSError as exc:
                raise map_os_error(exc, f"create {self.pending}") from None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._named = True
        return fd

    def write(self, data, hasher=None):
        """Hash (when given a hasher) and append ``data``."""
        try:
            streamio.write_all(self.fd, data, hasher)
        except OSError as exc:
            raise map_os_error(exc, "write") from None
        self.size += len(data)

    def set_attrs(self, attrs):
        """Write xattrs ({name: bytes}) on the pending file."""
        try:
            streamio.write_xattrs(self.fd, attrs)
        except OSError as exc:
            raise map_os_error(exc, "setxattr") from None

    def commit(self):
        """fdatasync (if configured), rename into place without replacing, fsync the dir."""
        try:
            if self.repo.fsync:
                os.fdatasync(self.fd)
            streamio.rename_noreplace(self.pending, self.path)
        except FileExistsError:
            self.abort()
            raise ChunkExists(self.chunk_id) from None
        except OSError as exc:
            self.abort()
            raise map_os_error(exc, "commit") from None
        self._named = False
        os.close(self.fd)
        self.fd = -1
        if self.repo.fsync_dir:
            dfd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def abort(self):
        """Remove everything of the chunk; safe to call twice."""
        self._aborted = True
        if self._named:
            self._named = False
            try:
                os.unlink(self.pending)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("cannot remove %s: %s", self.pending, exc)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ChunkReader:
    """An open chunk: ``fd``, ``size``, ``mtime``, ``ctime_ns``, the inode's identity in
    ``key``; its xattrs are read on demand by ``read_attrs()`` (callers that cache
    metadata per inode version skip them)."""

    __slots__ = ("path", "fd", "size", "mtime", "ctime", "ctime_ns", "key", "_attrs")

    def __init__(self, path, nofollow=False):
        self.path = path
        flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
        try:
            self.fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP and nofollow:
                raise PermissionDenied(f"{path} is a symbolic link") from None
            raise map_os_error(exc, path) from None
        try:
            st = os.fstat(self.fd)
        except OSError as exc:
            os.close(self.fd)
            raise map_os_error(exc, path) from None
        if not stat.S_ISREG(st.st_mode):
            os.close(self.fd)
            raise ChunkNotFound(path)
        self.size = st.st_size
        self.mtime = st.st_mtime
        self.ctime = st.st_ctime
        self.ctime_ns = st.st_ctime_ns
        self.key = (st.st_dev, st.st_ino)
        self._attrs = None

    def read_attrs(self):
        """All xattrs of the chunk ({name: bytes}), read once."""
        if self._attrs is None:
            try:
                self._attrs = streamio.read_xattrs(self.fd)
            except OSError as exc:
                raise map_os_error(exc, self.path) from None
        return self._attrs

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
