"""The blocking side of a SWAP session (spec swap.md, "Node behaviour"): what each
request does on disk, run on a worker's I/O threads, one request of a connection at a
time. Each function returns the reply items for the connection: frames (bytes) and
``Segments`` (a file range to send as FILE_SEGMENT frames, by sendfile)."""
import errno
import fcntl
import logging
import os
import shutil
import stat

from storage import swap
from storage.fast import load
from storage.rawx import meta as chunkmeta
from storage.swap.groups import OutsideGroup
from storage.swap.messages import FinishType, MessageType, PathKind

streamio = load("streamio")
log = logging.getLogger(__name__)

SEGMENT = 524288  # bytes of file data per FILE_SEGMENT (the 2010 peers' size)
MAX_NAMES = 32767
NAMES_BUDGET = 1 << 20  # bytes of names in one LIST_DIRECTORY_RESULT
WRITING_SUFFIX = ".swap-writing"
_MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"


def close_file(fid, reason, md5=""):
    return swap.encode(MessageType.CLOSE_FILE, [(fid, int(reason), md5)])


def segment_header(fid, offset, length):
    """The bytes of a FILE_SEGMENT frame before its ``length`` bytes of data."""
    return (24 + length).to_bytes(4, "big") + b"\x00\x08\x00\x01" + \
        fid.to_bytes(8, "big", signed=True) + offset.to_bytes(8, "big", signed=True) + \
        length.to_bytes(4, "big")


class Segments:
    """A file range to send as FILE_SEGMENTs of ``fid`` (then ``close``, a frame, or
    None): the connection sends each header, then the data by sendfile (or pread
    under TLS); ``release()`` when done or dropped."""

    __slots__ = ("fd", "fid", "offset", "remaining", "close", "owned", "pending",
                 "seg_left")

    def __init__(self, fd, fid, offset, length, close=None, owned=True):
        self.fd = fd
        self.fid = fid
        self.offset = offset
        self.remaining = length
        self.close = close
        self.owned = owned  # the fd is closed on release
        self.pending = b""  # header (or close frame) bytes not sent yet
        self.seg_left = 0  # data bytes of the current segment not sent yet

    def release(self):
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class OpenFile:
    """A fid of a connection: a random-access read (``fd``) or a write (``fd`` on the
    locked temp file ``temp``, renamed onto ``path`` if the md5 matches)."""

    __slots__ = ("fd", "path", "temp", "md5")

    def __init__(self, fd, path=None, temp=None):
        self.fd = fd
        self.path = path
        self.temp = temp
        self.md5 = streamio.Md5() if temp else None

    @property
    def writing(self):
        return self.temp is not None

    def discard(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.temp:
            _unlink(self.temp)
            self.temp = None


class Session:
    """The files of one connection and the requests that use them. ``groups``: {uuid:
    FileGroup}; ``events``: the node's event sink (chunk deletes), or None; ``feeds``:
    the node's FeedRecorder (chunk deletes), or None."""

    def __init__(self, config, groups, events, feeds=None):
        self.config = config
        self.groups = groups
        self.events = events
        self.feeds = feeds
        self.files = {}  # fid -> OpenFile
        self.streaming = set()  # fids of running REQUEST_FILE_STREAMs

    def close(self):
        """The connection ends: open files close, unfinished writes are discarded."""
        for entry in self.files.values():
            entry.discard()
        self.files.clear()

    def _in_use(self, fid):
        return fid in self.files or fid in self.streaming

    def _open_read(self, group_id, path):
        """(fd, FileGroup, full path) of a file to read, or a FinishType."""
        group = self.groups.get(group_id)
        if group is None:
            return FinishType.NONEXISTENT_GROUP
        try:
            full = group.resolve(path)
        except OutsideGroup:
            return FinishType.WRONG_NODE
        try:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return FinishType.FILE_DOES_NOT_EXIST
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return FinishType.FILE_DOES_NOT_EXIST
        return fd, group, full

    # ---- reads ---------------------------------------------------------------------
    def request_file_stream(self, group_id, path, fid, offset, length):
        if self._in_use(fid):
            return [close_file(fid, FinishType.DUPLICATE_FID)]
        opened = self._open_read(group_id, path)
        if isinstance(opened, FinishType):
            return [close_file(fid, opened)]
        fd, group, full = opened
        try:
            size = os.fstat(fd).st_size
            start = max(offset, 0)
            end = size if length <= 0 else min(size, start + length)
            if start >= end:
                os.close(fd)
                return [close_file(fid, FinishType.USER_REQUESTED, _MD5_EMPTY)]
            md5 = self._stored_md5(group, full, fd, start, end, size) or \
                streamio.hash_file(fd, "md5", start, end - start).lower()
        except OSError as exc:
            os.close(fd)
            log.error("SWAP stream of %s: %s", full, exc)
            return [close_file(fid, FinishType.IO_ERROR)]
        self.streaming.add(fid)
        return [Segments(fd, fid, start, end - start,
                         close_file(fid, FinishType.USER_REQUESTED, md5))]

    @staticmethod
    def _stored_md5(group, full, fd, start, end, size):
        """The md5 of a whole plain chunk from its xattrs (the chunk's own MD5, which
        the receiver checks the bytes against), or None when it cannot stand for them."""
        if group.repo is None or start != 0 or end != size:
            return None
        try:
            attrs = streamio.read_xattrs(fd)
        except OSError:
            return None
        name = os.path.basename(full)
        if not chunkmeta.valid_chunk_id(name):
            return None
        stored = chunkmeta.StoredMeta(name, attrs)
        digest = stored.get("chunk_hash")
        if stored.compression or stored.expected_size != size or len(digest) != 32:
            return None
        return digest.lower()

    def stream_done(self, fid):
        self.streaming.discard(fid)

    def random_access_open(self, group_id, path, fid):
        if self._in_use(fid):
            return [close_file(fid, FinishType.DUPLICATE_FID)]
        opened = self._open_read(group_id, path)
        if isinstance(opened, FinishType):
            return [close_file(fid, opened)]
        self.files[fid] = OpenFile(opened[0])
        return []

    def request_file_segment(self, fid, offset, length):
        entry = self.files.get(fid)
        if entry is None or entry.writing:
            return [close_file(fid, FinishType.FID_NOT_OPEN)]
        size = os.fstat(entry.fd).st_size
        start = max(offset, 0)
        end = min(size, start + max(length, 0))
        if start >= end:
            return []
        return [Segments(entry.fd, fid, start, end - start, owned=False)]

    # ---- writes --------------------------------------------------------------------
    def transmit_file_stream(self, group_id, path, fid):
        group = self.groups.get(group_id)
        if group is None:
            return [close_file(fid, FinishType.GROUP_DOES_NOT_EXIST)]
        if self._in_use(fid):
            return [close_file(fid, FinishType.DUPLICATE_FID)]
        if not group.writable:
            return [close_file(fid, FinishType.PERMISSION_DENIED)]
        try:
            full = group.resolve(path)
        except OutsideGroup:
            return [close_file(fid, FinishType.WRONG_NODE)]
        if full == group.root:
            return [close_file(fid, FinishType.PERMISSION_DENIED)]
        directory, name = os.path.split(full)
        temp = os.path.join(directory, f".{name}{WRITING_SUFFIX}")
        try:
            os.makedirs(directory, exist_ok=True)
            if not group.inside(directory):
                return [close_file(fid, FinishType.WRONG_NODE)]
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            log.error("SWAP write of %s: %s", full, exc)
            return [close_file(fid, FinishType.IO_ERROR)]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another session writes this path
            os.close(fd)
            return [close_file(fid, FinishType.FILE_DOES_NOT_EXIST)]
        os.ftruncate(fd, 0)  # a crashed writer's leftovers
        self.files[fid] = OpenFile(fd, full, temp)
        return []

    def file_segment(self, fid, offset, data):
        entry = self.files.get(fid)
        if entry is None or not entry.writing:
            return []  # unknown fid: ignored
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(entry.fd, view[done:], offset + done)
            entry.md5.update(view)
        except OSError as exc:
            log.error("SWAP write of %s: %s", entry.path, exc)
            entry.discard()
            del self.files[fid]
            return [close_file(fid, FinishType.IO_ERROR)]
        return []

    def close_file(self, fid, reason, md5):
        entry = self.files.pop(fid, None)
        if entry is None:
            return []
        if not entry.writing:
            entry.discard()
            return []
        temp = entry.temp
        if md5.lower() != entry.md5.hexdigest() or reason != FinishType.USER_REQUESTED:
            log.info("SWAP write of %s discarded (md5 %r, reason %d)", entry.path, md5, reason)
            entry.discard()
            return []
        try:
            if self.config.fsync:
                os.fsync(entry.fd)
            os.rename(temp, entry.path)  # the lock goes with the fd, closed next
            entry.temp = None
        except OSError as exc:
            log.error("SWAP write of %s: %s", entry.path, exc)
        entry.discard()
        return []

    # ---- metadata ------------------------------------------------------------------
    def get_path_details(self, group_id, paths):
        group = self.groups.get(group_id)
        records = []
        for path in paths:
            if group is None:
                records.append((group_id, path, PathKind.NOT_LOCAL, 0, 0))
                continue
            try:
                st = os.stat(group.resolve(path))
            except (OutsideGroup, OSError):
                records.append((group_id, path, PathKind.NOT_FOUND, 0, 0))
                continue
            kind = PathKind.DIRECTORY if stat.S_ISDIR(st.st_mode) else PathKind.FILE
            records.append((group_id, path, kind, st.st_size, st.st_mtime_ns // 1_000_000))
        return [swap.encode(MessageType.PATH_DETAILS, records, 1 << 30)]

    def list_directory(self, group_id, directory):
        group = self.groups.get(group_id)
        names = []
        if group is not None:
            try:
                full = group.resolve(directory)
                with os.scandir(full) as entries:
                    budget = NAMES_BUDGET
                    for entry in entries:
                        if not group.visible(entry.name) or \
                                entry.name.endswith(WRITING_SUFFIX):
                            continue
                        budget -= len(entry.name) + 2
                        if len(names) >= MAX_NAMES or budget < 0:
                            log.warning("SWAP LIST_DIRECTORY %s: over %d names, cut",
                                        directory, len(names))
                            break
                        names.append(entry.name)
            except (OutsideGroup, OSError):
                names = []
        return [swap.encode(MessageType.LIST_DIRECTORY_RESULT,
                            [(group_id, directory, names)], 4 << 20)]

    def delete_path(self, group_id, path):
        group = self.groups.get(group_id)
        if group is None:
            return []
        try:
            full = group.resolve(path)
        except OutsideGroup:
            return []
        if full == group.root:
            log.warning("SWAP DELETE_PATH of a group's root refused")
            return []
        if group.repo is not None:
            self._delete_chunks(group, full)
            return []
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("SWAP DELETE_PATH %s: %s", full, exc)
        return []

    def _delete_chunks(self, group, full):
        """Chunks leave the volume as a RAWX DELETE makes them leave (events included):
        a chunk file, or every chunk under a directory."""
        if os.path.isdir(full) and not os.path.islink(full):
            for directory, _, names in os.walk(full):
                for name in names:
                    self._delete_chunk(group, os.path.join(directory, name))
            return
        self._delete_chunk(group, full)

    def _delete_chunk(self, group, full):
        chunk_id = os.path.basename(full)
        if not chunkmeta.valid_chunk_id(chunk_id) or full != group.repo.chunk_path(chunk_id):
            return  # not a chunk (the node's own files, a pending upload)
        try:
            reader = group.repo.reader(chunk_id, nofollow=True)
            try:
                stored = chunkmeta.StoredMeta(chunk_id, reader.read_attrs())
            finally:
                reader.close()
            if self.feeds is not None:  # before the unlink, as a RAWX DELETE
                self.feeds.record_deleted(stored, "")
            own = chunkmeta.XATTR_FULLPATH + chunk_id if self.config.shallow_copy else None
            group.repo.delete(chunk_id, own_attr=own)
        except Exception as exc:  # a chunk gone meanwhile, a permission problem, the queue
            log.info("SWAP DELETE_PATH of chunk %s: %s", chunk_id, exc)
            return
        if self.events is not None:
            self.events.emit("storage.chunk.deleted", "",
                             stored.event_data(self.config.listen, self.config.service_id))


def _unlink(path):
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.error("cannot remove %s: %s", path, exc)
