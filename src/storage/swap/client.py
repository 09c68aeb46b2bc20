"""A small blocking SWAP client (spec/swap.md) for the ``storage-node swap`` commands,
tests and tools: one socket, the sans-I/O frame codec, one operation at a time.

    client = SwapClient.connect("node", 9123, timeout=30, ssl_context=ctx)
    client.authenticate("admin", "secret", plaintext=True)   # not for peers
    chunks = client.group("chunks")                          # the group's UUID
    client.stat(chunks, ["ABC/ABCDEF...", "/ABCDEF..."])     # one frame, many paths
    client.get(chunks, "ABC/ABCDEF...", open("out", "wb"))   # -> Transfer(size, md5)
    client.put(client.group("files"), "dir/name", open("in", "rb"))

Replies are read in the order the node sends them. Messages the node answers with
nothing on success (TRANSMIT_FILE_STREAM, CLOSE_FILE, RANDOM_ACCESS_OPEN,
DELETE_PATH) are followed by a GET_PATH_DETAILS in the same write, whose reply marks
the point where a refusal (a CLOSE_FILE for our fid) would have come.

An operation that fails with the connection still in step (``RemoteRefused``,
``ChecksumMismatch``, ``NotStored``, ``NotDeleted``) leaves the client usable; any
other failure (a malformed frame, an unexpected message, I/O errors, an exception
from the caller's output) closes it.
"""
import ipaddress
import select
import socket
import uuid
from collections import namedtuple

from storage.fast import load
from storage.swap import (
    DEFAULT_MAX_FRAME,
    RECORDS,
    EncodeError,
    FinishType,
    FrameWriter,
    MessageType,
    PathKind,
    ProtocolError,
    SaslCode,
    encode,
    new_reader,
)

streamio = load("streamio")  # its Md5 hashes without the GIL, faster than hashlib's

__all__ = [
    "DEFAULT_PORT",
    "SEGMENT_SIZE",
    "AuthFailed",
    "ChecksumMismatch",
    "Group",
    "NotDeleted",
    "NotStored",
    "PathDetails",
    "RemoteRefused",
    "SwapClient",
    "SwapConnectionError",
    "SwapError",
    "SwapProtocolError",
    "Transfer",
    "UnknownGroup",
]

T = MessageType
DEFAULT_PORT = 9123
#: bytes per FILE_SEGMENT we send (what the node sends too)
SEGMENT_SIZE = 512 << 10
#: largest frame we read: a LIST_DIRECTORY_RESULT of 32,767 long names is ~8 MiB
CLIENT_MAX_FRAME = 16 << 20
#: largest frame we ask the node to write or read (its reader's default bound)
NODE_MAX_FRAME = DEFAULT_MAX_FRAME
MAX_COUNT = 32767
RECV_SIZE = 1 << 20
AUTHZID = b"myuser"  # what the 2010 client sends; the node ignores it

PathDetails = RECORDS[T.PATH_DETAILS]  # (group, path, kind, size, mtime ms)


class Group(namedtuple("Group", "uuid namespace slices local")):
    """A file group: ``namespace`` is e.g. ``OPENIO/chunks``; ``local`` says whether
    its slices are in the node's partitions (False: the node holds it inactive)."""

    @property
    def name(self):
        """The last part of the namespace (``chunks``, ``files``)."""
        return self.namespace.rsplit("/", 1)[-1]


class Removal(namedtuple("Removal", "path before after left")):
    """What DELETE_PATH did to ``path``: its kind ``before`` and ``after`` (PathKind)
    and, for a directory still there, how many names it still holds (``left``)."""

    @property
    def outcome(self):
        """'deleted', 'emptied' (a directory left empty: the chunks group keeps its
        hashed directories), 'still-there', or 'not-found' / 'not-local' when there
        was nothing to delete."""
        present = (PathKind.FILE, PathKind.DIRECTORY)
        if self.after == PathKind.DIRECTORY and self.left == 0 \
                and self.before == PathKind.DIRECTORY:
            return "emptied"
        if self.after in present:
            return "still-there"
        if self.before in present:
            return "deleted"
        return "not-local" if self.before == PathKind.NOT_LOCAL else "not-found"


class Transfer(namedtuple("Transfer", "size md5")):
    """A finished stream: ``size`` bytes, ``md5`` their lower-case hex digest."""


class SwapError(Exception):
    """Any SWAP client failure."""

    usable = False  # whether the connection is still in step after it


class SwapProtocolError(SwapError):
    """The node sent a malformed frame or a message that does not fit the exchange."""


class SwapConnectionError(SwapError):
    """The connection failed, timed out or was closed by the node."""


class AuthFailed(SwapError):
    """The node refused the credentials (SASL_RESPONSE 1, or closed before a reply)."""


class UnknownGroup(SwapError):
    """No file group of the node matches the name."""

    usable = True


class RemoteRefused(SwapError):
    """The node ended a file with a nonzero FINISH_TYPE: ``code`` and ``name``."""

    usable = True

    def __init__(self, code, path, action="stream"):
        self.code = code
        try:
            self.name = FinishType(code).name
        except ValueError:
            self.name = "UNKNOWN"
        self.path = path
        super().__init__(f"{action} {path!r} refused: {self.name} ({code})")


class ChecksumMismatch(SwapError):
    """The bytes received do not have the md5 the node's CLOSE_FILE announced."""

    usable = True


class NotStored(SwapError):
    """After a write the node does not show the file at its size (it discarded it)."""

    usable = True


class NotDeleted(SwapError):
    """After DELETE_PATH the path is still there."""

    usable = True


def _kind(value):
    try:
        return PathKind(value)
    except ValueError:
        return value


def _guarded(method):
    """Close the connection when ``method`` fails leaving it out of step."""
    def wrapper(self, *args, **kwargs):
        if self._sock is None:
            raise SwapConnectionError("the connection is closed")
        try:
            return method(self, *args, **kwargs)
        except SwapError as exc:
            if not exc.usable:
                self.close()
            raise
        except BaseException:
            self.close()
            raise
    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class SwapClient:
    """One SWAP session over a connected socket (plain or TLS). ``peer=True``: the
    node knows this address as a peer and sends no SASL_MECHANISMS; no
    ``authenticate()`` is needed (or possible)."""

    def __init__(self, sock, peer=False, max_frame=CLIENT_MAX_FRAME):
        self._sock = sock
        self._tls = hasattr(sock, "unwrap")  # an ssl.SSLSocket
        self.timeout = sock.gettimeout()
        self.peer = peer
        self.authenticated = peer
        self._reader = new_reader(max_frame)
        self._writer = FrameWriter(NODE_MAX_FRAME)
        self._eof = False
        self._fid = 0
        self._groups = None
        self._recv_buf = None

    @classmethod
    def connect(cls, host, port=DEFAULT_PORT, timeout=30.0, ssl_context=None,
                server_hostname=None, peer=False):
        """Open a session to ``host:port`` (TCP, then TLS with ``ssl_context``);
        ``timeout`` seconds bounds every wait. Raises SwapConnectionError."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SwapConnectionError(f"cannot connect to {host}:{port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except OSError as exc:
            sock.close()
            raise SwapConnectionError(f"TLS with {host}:{port} failed: {exc}") from exc
        return cls(sock, peer=peer)

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self._sock is None

    @property
    def tls(self):
        """Whether the session currently runs over TLS."""
        return self._sock is not None and self._tls

    # -- I/O ---------------------------------------------------------------------

    def _recv_some(self):
        if self._recv_buf is None:
            self._recv_buf = memoryview(bytearray(RECV_SIZE))
        try:
            # into one buffer kept for the session: recv() would allocate RECV_SIZE
            # each time, whatever arrives (the reader copies what it keeps)
            n = self._sock.recv_into(self._recv_buf)
        except TimeoutError:
            raise SwapConnectionError(f"no reply from the node in {self.timeout}s") from None
        except OSError as exc:
            raise SwapConnectionError(f"receiving from the node failed: {exc}") from exc
        if not n:
            self._eof = True
            return
        try:
            self._reader.feed(self._recv_buf[:n])
        except ProtocolError as exc:
            raise SwapProtocolError(str(exc)) from None

    def _buffered_message(self):
        """The next message already received, or None."""
        try:
            msg = self._reader.next()
        except ProtocolError as exc:
            raise SwapProtocolError(str(exc)) from None
        if msg is None:
            return None
        t, records = msg
        try:
            t = T(t)
        except ValueError:  # the reader knows every type; kept for safety
            raise SwapProtocolError(f"unknown message type {t}") from None
        make = RECORDS[t]._make
        return t, [make(r) for r in records]

    def _next_message(self):
        """The next message from the node: (MessageType, [record namedtuple, ...])."""
        while True:
            msg = self._buffered_message()
            if msg is not None:
                return msg
            if self._eof:
                try:
                    self._reader.eof()
                except ProtocolError as exc:
                    raise SwapProtocolError(str(exc)) from None
                raise SwapConnectionError("the node closed the connection")
            self._recv_some()

    def _send(self, data):
        """Send ``data`` whole, reading whatever the node sends meanwhile (so that a
        node that stops reading while its replies pile up cannot deadlock us). When
        the node has closed, stop: the caller's next read reports what it sent
        before closing, then the EOF."""
        view = memoryview(data)
        sock = self._sock
        while view and not self._eof:
            readable, writable, _ = select.select([sock], [sock], [], self.timeout)
            if not readable and not writable:
                raise SwapConnectionError(f"the node took nothing for {self.timeout}s")
            if readable:
                self._recv_some()
            if writable and not self._eof:
                try:
                    sent = sock.send(view[:RECV_SIZE])
                except (BrokenPipeError, ConnectionResetError):
                    self._eof = True
                    return
                except TimeoutError:
                    raise SwapConnectionError(
                        f"the node took nothing for {self.timeout}s") from None
                except OSError as exc:
                    raise SwapConnectionError(f"sending to the node failed: {exc}") from exc
                view = view[sent:]

    def _expect(self, msg_type):
        t, records = self._next_message()
        if t == T.SASL_MECHANISMS and msg_type != t:
            raise AuthFailed("the node asks for a login: it does not take this address "
                             "for a peer" if self.peer else "the node asks for a login again")
        if t != msg_type:
            raise SwapProtocolError(f"expected {msg_type.name}, got {t.name}")
        return records

    def _next_fid(self):
        self._fid += 1
        return self._fid

    def _need_auth(self):
        if not self.authenticated:
            raise SwapError("authenticate() first")

    # -- session -----------------------------------------------------------------

    @_guarded
    def authenticate(self, user, password, plaintext=False):
        """SASL PLAIN as ``user``; raises AuthFailed (the connection is then closed).
        ``plaintext=True``: after success shut TLS down and go on in plaintext on
        the same socket (spec step 5)."""
        if self.peer:
            raise SwapError("a peer session does not authenticate")
        if self.authenticated:
            raise SwapError("already authenticated")
        user_b, password_b = user.encode(), password.encode()
        if not user_b or b"\0" in user_b or b"\0" in password_b:
            raise ValueError("the user must be non-empty and neither may contain NUL")
        try:
            records = self._expect(T.SASL_MECHANISMS)
        except SwapConnectionError as exc:
            raise AuthFailed(f"no SASL offer from the node: {exc}") from None
        offered = [m for rec in records for m in rec.mechanisms]
        if "PLAIN" not in offered:
            raise AuthFailed(f"the node does not offer PLAIN (offers {offered})")
        self._send(encode(T.SASL_REQUEST, [("PLAIN", b"\0".join((AUTHZID, user_b,
                                                                password_b)))]))
        try:
            records = self._expect(T.SASL_RESPONSE)
        except SwapConnectionError:
            raise AuthFailed(f"the node refused {user!r} (closed without a reply)") from None
        code = records[0].code if records else None
        if code != SaslCode.OK:
            raise AuthFailed(f"the node refused {user!r} (SASL_RESPONSE {code})")
        self.authenticated = True
        if plaintext:
            self.unwrap()

    def unwrap(self):
        """Shut TLS down (close_notify both ways) and go on in plaintext."""
        if not self.tls:
            raise SwapError("the session is not over TLS")
        if self._reader.buffered:
            raise SwapProtocolError("the node sent data along with its TLS shutdown")
        try:
            # the same SSLSocket object, reading and writing in plaintext from now on
            self._sock = self._sock.unwrap()
            self._tls = False
        except OSError as exc:
            self.close()
            raise SwapConnectionError(f"TLS shutdown failed: {exc}") from exc

    # -- groups and peers --------------------------------------------------------

    @_guarded
    def list_groups(self):
        """The node's file groups ([Group]), asked as the 2010 client does:
        LIST_PARTITIONS, LIST_FG, LIST_SLICES in one write, one reply frame each."""
        self._need_auth()
        self._send(encode(T.LIST_PARTITIONS, [()]) + encode(T.LIST_FG, [()])
                   + encode(T.LIST_SLICES, [()]))
        partitions = self._expect(T.PARTITION_DETAILS)
        groups = self._expect(T.FG_LIST)
        self._expect(T.SLICE_ONLINE)
        local = {s for p in partitions for s in p.slices}
        self._groups = [Group(g.group, "/".join(g.namespace), list(g.slices),
                              any(s in local for s in g.slices)) for g in groups]
        return list(self._groups)

    def group(self, name):
        """The UUID of the group named ``name``: its namespace, the namespace's last
        part (``chunks``, ``files``) or the UUID itself. Raises UnknownGroup."""
        if isinstance(name, uuid.UUID):
            return name
        try:
            return uuid.UUID(name)
        except ValueError:
            pass
        groups = self._groups if self._groups is not None else self.list_groups()
        found = [g for g in groups if g.namespace == name] or \
            [g for g in groups if g.namespace.endswith("/" + name) or g.name == name]
        if len(found) != 1:
            names = ", ".join(g.namespace for g in groups) or "none"
            what = "no" if not found else "more than one"
            raise UnknownGroup(f"{what} file group matches {name!r} (the node has: {names})")
        return found[0].uuid

    @_guarded
    def peers(self):
        """The node's configured peers: [(address, port)], the address as a string
        (an IPv4 or IPv6 address; other byte strings in hex)."""
        self._need_auth()
        self._send(encode(T.LIST_PEERS, [()]))
        out = []
        for rec in self._expect(T.LIST_PEER_RESULT):
            raw = bytes(rec.address)
            try:
                host = str(ipaddress.ip_address(raw))
            except ValueError:
                host = raw.hex()
            out.append((host, rec.port))
        return out

    # -- metadata ----------------------------------------------------------------

    def _stat_frames(self, gid, paths):
        """GET_PATH_DETAILS frames for ``paths``: at most 32,767 paths each, and
        few enough that the node's PATH_DETAILS reply stays within a frame.
        Returns (frames bytes, [paths per frame])."""
        w = self._writer
        batches, batch, reply = [], [], 8
        for path in paths:
            size = 38 + len(path.encode("utf-8", "surrogateescape"))  # one reply record
            if batch and (len(batch) == MAX_COUNT or reply + size > NODE_MAX_FRAME - 4):
                batches.append(batch)
                batch, reply = [], 8
            batch.append(path)
            reply += size
        batches.append(batch)
        try:
            for batch in batches:
                w.begin(T.GET_PATH_DETAILS)
                w.uuid(gid)
                w.string_array(batch)
                w.end_record()
                w.end()
        except EncodeError as exc:
            raise ValueError(f"cannot ask for these paths: {exc}") from None
        return w.take(), batches

    def _read_details(self, gid, batches):
        out = []
        for batch in batches:
            records = self._expect(T.PATH_DETAILS)
            if len(records) != len(batch):
                raise SwapProtocolError(
                    f"PATH_DETAILS has {len(records)} records for {len(batch)} paths")
            for path, rec in zip(batch, records):
                if rec.path != path or rec.group != gid:
                    raise SwapProtocolError(f"PATH_DETAILS for {rec.path!r} in {rec.group} "
                                            f"where {path!r} in {gid} was asked")
                out.append(rec._replace(kind=_kind(rec.kind)))
        return out

    @_guarded
    def stat(self, group, paths):
        """PathDetails (group, path, kind, size, mtime ms) for each of ``paths``, in
        order: one GET_PATH_DETAILS frame per 32,767 paths (fewer for long paths),
        the frames sent in one write. ``kind`` is a PathKind."""
        self._need_auth()
        gid = self.group(group)
        if isinstance(paths, str):
            raise TypeError("paths must be a list of strings")
        paths = list(paths)
        if not paths:
            return []
        frames, batches = self._stat_frames(gid, paths)
        self._send(frames)
        return self._read_details(gid, batches)

    @_guarded
    def ls(self, group, directory=""):
        """The names in ``directory`` (any order; [] for a missing path, a file or an
        unknown group)."""
        self._need_auth()
        gid = self.group(group)
        self._send(encode(T.LIST_DIRECTORY, [(gid, directory)]))
        names = []
        for rec in self._expect(T.LIST_DIRECTORY_RESULT):
            if rec.dir != directory or rec.group != gid:
                raise SwapProtocolError(f"LIST_DIRECTORY_RESULT for {rec.dir!r} where "
                                        f"{directory!r} was asked")
            names.extend(rec.names)
        return names

    @_guarded
    def rm_many(self, group, paths):
        """DELETE_PATH each of ``paths`` (directories recursively), bracketed by two
        GET_PATH_DETAILS, all in one write; a directory still there afterwards is
        listed. Returns a Removal per path."""
        self._need_auth()
        gid = self.group(group)
        paths = list(paths)
        if not paths:
            return []
        frames, batches = self._stat_frames(gid, paths)
        try:
            deletes = b"".join(encode(T.DELETE_PATH, [(gid, p)]) for p in paths)
        except EncodeError as exc:
            raise ValueError(str(exc)) from None
        self._send(frames + deletes + frames)
        before = self._read_details(gid, batches)
        after = self._read_details(gid, batches)
        left = {}
        dirs = [a.path for a in after if a.kind == PathKind.DIRECTORY]
        if dirs:  # the chunks group keeps its hashed directories, emptied
            self._send(b"".join(encode(T.LIST_DIRECTORY, [(gid, d)]) for d in dirs))
            for d in dirs:
                left[d] = sum(len(r.names) for r in self._expect(T.LIST_DIRECTORY_RESULT))
        return [Removal(b.path, b.kind, a.kind, left.get(a.path))
                for b, a in zip(before, after)]

    def rm(self, group, path):
        """Delete ``path``: True when it was there and is gone (or, a directory,
        emptied), False when there was nothing to delete. Raises NotDeleted when it
        is still there."""
        [removal] = self.rm_many(group, [path])
        if removal.outcome == "still-there":
            raise NotDeleted(f"{path!r} is still there after DELETE_PATH")
        return removal.outcome in ("deleted", "emptied")

    # -- data --------------------------------------------------------------------

    def _check_close(self, rec, fid, path, action):
        if rec.fid != fid:
            raise SwapProtocolError(f"CLOSE_FILE for fid {rec.fid} where {fid} is open")
        if rec.reason != FinishType.USER_REQUESTED:
            raise RemoteRefused(rec.reason, path, action)

    @_guarded
    def get(self, group, path, out, offset=0, length=0, progress=None, verify=True):
        """Stream ``path`` from ``offset`` (``length`` <= 0: to the end) into ``out``
        (a binary file, or a callable taking each segment's bytes as they come:
        memory stays at one segment). ``progress(bytes so far)`` after each
        segment. Returns Transfer(size, md5); raises RemoteRefused (the node's
        FINISH_TYPE) or ChecksumMismatch (the node's md5 differs). ``verify=False``
        trusts the bytes (no MD5 computed; the md5 returned is the node's)."""
        self._need_auth()
        gid = self.group(group)
        fid = self._next_fid()
        write = out.write if hasattr(out, "write") else out
        self._send(encode(T.REQUEST_FILE_STREAM, [(gid, path, fid, offset, length)]))
        md5 = streamio.Md5() if verify else None
        done = 0
        while True:
            t, records = self._next_message()
            if t == T.FILE_SEGMENT:
                for rec in records:
                    if rec.fid != fid or rec.offset != offset + done:
                        raise SwapProtocolError(
                            f"FILE_SEGMENT fid {rec.fid} at {rec.offset} where fid {fid} "
                            f"at {offset + done} was due")
                    if length > 0 and done + len(rec.data) > length:
                        raise SwapProtocolError(f"the node sent more than {length} bytes")
                    if md5 is not None:
                        md5.update(rec.data)
                    write(rec.data)
                    done += len(rec.data)
                # let go of this frame's buffer before the next one is read
                rec = records = None
                if progress is not None:
                    progress(done)
            elif t == T.CLOSE_FILE and len(records) == 1:
                self._check_close(records[0], fid, path, "stream")
                if md5 is None:
                    return Transfer(done, records[0].md5.lower())
                digest = md5.hexdigest()
                if records[0].md5.lower() != digest:
                    raise ChecksumMismatch(f"{path!r}: received {done} bytes of md5 "
                                           f"{digest}, the node says {records[0].md5!r}")
                return Transfer(done, digest)
            else:
                raise SwapProtocolError(f"{t.name} during the stream of fid {fid}")

    @_guarded
    def read_range(self, group, path, offset, length):
        """``length`` bytes (fewer at the end) of ``path`` from ``offset``, by random
        access: RANDOM_ACCESS_OPEN, REQUEST_FILE_SEGMENT, CLOSE_FILE and a
        GET_PATH_DETAILS of the path (the node sends no end marker of its own) in one
        write. Raises RemoteRefused."""
        self._need_auth()
        if not 0 <= length <= 0x7FFFFFFF or offset < 0:
            raise ValueError("offset >= 0 and 0 <= length < 2 GiB")
        gid = self.group(group)
        fid = self._next_fid()
        frames, batches = self._stat_frames(gid, [path])
        self._send(encode(T.RANDOM_ACCESS_OPEN, [(gid, path, fid)])
                   + encode(T.REQUEST_FILE_SEGMENT, [(fid, offset, length)])
                   + encode(T.CLOSE_FILE, [(fid, FinishType.USER_REQUESTED, "")]) + frames)
        data = bytearray()
        refused = None
        while True:
            t, records = self._next_message()
            if t == T.PATH_DETAILS:
                self._read_buffered(gid, batches, records)
                break
            if t == T.CLOSE_FILE:
                for rec in records:
                    if rec.fid != fid:
                        raise SwapProtocolError(f"CLOSE_FILE for fid {rec.fid}, not {fid}")
                    if refused is None:  # the first reason; a refused open gives 9 next
                        refused = RemoteRefused(rec.reason, path, "random access to")
            elif t == T.FILE_SEGMENT:
                for rec in records:
                    if rec.fid != fid or rec.offset != offset + len(data):
                        raise SwapProtocolError(
                            f"FILE_SEGMENT fid {rec.fid} at {rec.offset} where fid {fid} "
                            f"at {offset + len(data)} was due")
                    data += rec.data
                if len(data) > length:
                    raise SwapProtocolError(f"the node sent more than {length} bytes")
            else:
                raise SwapProtocolError(f"{t.name} during random access to fid {fid}")
        if refused is not None:
            raise refused
        return bytes(data)

    @_guarded
    def put(self, group, path, in_file, progress=None):
        """Write ``in_file`` (a binary file) to ``path``: TRANSMIT_FILE_STREAM,
        FILE_SEGMENTs of 512 KiB, CLOSE_FILE with their md5, then a GET_PATH_DETAILS
        that shows the file kept at its size. ``progress(bytes so far)`` after each
        segment. Returns Transfer(size, md5); raises RemoteRefused when the node
        ends the fid (e.g. PERMISSION_DENIED in the chunks group), NotStored when
        the file is not there afterwards."""
        self._need_auth()
        gid = self.group(group)
        fid = self._next_fid()
        frames, batches = self._stat_frames(gid, [path])
        self._send(encode(T.TRANSMIT_FILE_STREAM, [(gid, path, fid)]))
        md5 = streamio.Md5()
        buf = bytearray(SEGMENT_SIZE)
        view = memoryview(buf)
        done = 0
        w = self._writer
        while True:
            n = _fill(in_file, view)
            if not n:
                break
            md5.update(view[:n])
            w.begin(T.FILE_SEGMENT)
            w.int64(fid)
            w.int64(done)
            w.byte_array(view[:n])
            w.end_record()
            self._send(w.finish())
            done += n
            if progress is not None:
                progress(done)
            self._refused_early(fid, path)
        digest = md5.hexdigest()
        self._send(encode(T.CLOSE_FILE, [(fid, FinishType.USER_REQUESTED, digest)]) + frames)
        refused = None
        while True:
            t, records = self._next_message()
            if t == T.CLOSE_FILE and len(records) == 1 and records[0].fid == fid:
                refused = refused or RemoteRefused(records[0].reason, path, "write to")
            elif t == T.PATH_DETAILS:
                break
            else:
                raise SwapProtocolError(f"{t.name} while writing fid {fid}")
        (details,) = self._read_buffered(gid, batches, records)
        if refused is not None:
            raise refused
        if details.kind != PathKind.FILE or details.size != done:
            raise NotStored(f"{path!r}: sent {done} bytes, the node shows "
                            f"{_kind(details.kind).name} of {details.size} bytes")
        return Transfer(done, digest)

    def _read_buffered(self, gid, batches, records):
        """_read_details for a PATH_DETAILS frame already read."""
        (batch,) = batches
        if len(records) != 1 or records[0].path != batch[0] or records[0].group != gid:
            raise SwapProtocolError("PATH_DETAILS does not answer the path asked")
        return [records[0]._replace(kind=_kind(records[0].kind))]

    def _refused_early(self, fid, path):
        """During a write: if the node has already ended our fid, raise its reason
        (later FILE_SEGMENTs would be ignored, so stop sending them)."""
        if not self._eof:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if readable:
                self._recv_some()
        msg = self._buffered_message()
        if msg is None:
            if self._eof:
                self._next_message()  # raises: EOF (or a truncated frame)
            return
        t, records = msg
        if t == T.CLOSE_FILE and len(records) == 1 and records[0].fid == fid:
            raise RemoteRefused(records[0].reason, path, "write to")
        raise SwapProtocolError(f"{t.name} while writing fid {fid}")


def _fill(stream, view):
    """Read into ``view`` until it is full or the stream ends; the byte count."""
    readinto = getattr(stream, "readinto", None)
    n = 0
    while n < len(view):
        if readinto is not None:
            got = readinto(view[n:])
        else:
            data = stream.read(len(view) - n)
            got = len(data) if data else 0
            view[n:n + got] = data or b""
        if not got:
            break
        n += got
    return n
