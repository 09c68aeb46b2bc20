"""One SWAP session on a worker's loop (spec swap.md, "Session" and "Node behaviour").

The node speaks first (SASL_MECHANISMS), unless the peer is a configured one. Bytes
go through the sans-I/O ``FrameReader``; after SASL PLAIN, each request record becomes
a job, and jobs run one at a time in arrival order: the cheap ones (group and peer
lists) on the loop, the ones that touch the disk on the worker's I/O threads
(``storage.swap.files.Session``). Replies are written as the socket takes them; a
file stream goes out as FILE_SEGMENT headers with the data sent by sendfile, so a
stream of any size holds no file data in memory. Reading stops while too much is
queued (a fast writer cannot grow the queue without bound).

TLS (``swap_tls on``) is a sans-I/O ``ssl.SSLObject`` over memory BIOs: after the
SASL exchange the client may send close_notify and go on in plaintext on the same
socket; the bytes after its close_notify are read as plaintext.

A malformed frame, a wrong password or any message before authentication closes the
session (SWAP has no error reply); a silent peer times out (``timeout_read_header``
before authentication, ``timeout_idle`` after).
"""
import collections
import errno
import ipaddress
import logging
import os
import ssl
import time

from storage import swap
from storage.loop import READ, WRITE
from storage.loopconn import WOULD_BLOCK, LoopConnection
from storage.swap.files import SEGMENT, Segments, Session, segment_header
from storage.swap.groups import java_order
from storage.swap.messages import MessageType, SaslCode

log = logging.getLogger(__name__)

T = MessageType
READ_SIZE = 256 << 10
MAX_JOBS = 64  # request records queued before reading stops
MAX_OUT = 4 << 20  # reply bytes queued before reading stops
NODE_ONLY = {T.SLICE_ONLINE, T.FG_LIST, T.PARTITION_DETAILS, T.SLICE_OFFLINE,
             T.PATH_DETAILS, T.DELETE_IMMEDIATE, T.LIST_PEER_RESULT}
# the Session method answering each request that touches the disk (an I/O thread's)
ON_THREAD = {T.GET_PATH_DETAILS: Session.get_path_details,
             T.LIST_DIRECTORY: Session.list_directory,
             T.REQUEST_FILE_STREAM: Session.request_file_stream,
             T.RANDOM_ACCESS_OPEN: Session.random_access_open,
             T.REQUEST_FILE_SEGMENT: Session.request_file_segment,
             T.TRANSMIT_FILE_STREAM: Session.transmit_file_stream,
             T.FILE_SEGMENT: Session.file_segment,
             T.CLOSE_FILE: Session.close_file,
             T.DELETE_PATH: Session.delete_path}


class SwapService:
    """What a worker's SWAP sessions share: ``config``, ``groups`` [FileGroup],
    ``partition`` UUID, ``peers`` [(ip_address, port)], ``admin`` (AdminAuth or None),
    ``tls`` (an ssl.SSLContext or None), ``events``."""

    def __init__(self, config, groups, partition, peers, admin, tls, events, feeds=None):
        self.config = config
        self.groups = groups
        self.by_uuid = {g.uuid: g for g in groups}
        self.partition = partition
        self.peers = peers
        self.peer_ips = {ip for ip, _ in peers}
        self.admin = admin
        self.tls = tls
        self.events = events
        self.feeds = feeds  # storage.feeds.FeedRecorder or None


def parse_peers(text):
    """'ADDR[:PORT][,...]' (swap_peers) -> [(ip_address, port)]; ValueError naming the
    bad entry. The port (default 9123) is what LIST_PEERS reports."""
    peers = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, port = item, 9123
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 9123
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = int(port_text) if port_text.isdigit() else -1
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"not an IP address: {item!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"bad port in {item!r}")
        peers.append((address, port))
    return peers


class SwapConnection(LoopConnection):
    def __init__(self, sock, peer, loop, worker, service):
        super().__init__(sock, peer, loop, worker, service)
        self.reader = swap.new_reader()
        self.session = Session(service.config, service.by_uuid, service.events,
                               service.feeds)
        self.jobs = collections.deque()
        self.out = collections.deque()  # bytes and Segments
        self.out_bytes = 0
        self.running = False
        self._advancing = False  # inside _next (no re-entry from _flush)
        self.closing = False  # close once the output is out
        ip = _address(peer)
        self.is_peer = ip in service.peer_ips
        self.authenticated = self.is_peer
        self.tls = None  # (SSLObject, incoming MemoryBIO, outgoing MemoryBIO) while on
        self.raw_out = b""  # encrypted bytes not sent yet
        if service.tls is not None:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = service.tls.wrap_bio(incoming, outgoing, server_side=True)
            self.tls = (obj, incoming, outgoing)
            self.handshaking = True
        else:
            self.handshaking = False
        self.deadline = time.monotonic() + (self.config.timeout_idle if self.authenticated
                                            else self.config.timeout_read_header)
        if not self.authenticated and self.tls is None:
            self._queue(swap.encode(T.SASL_MECHANISMS, [(["PLAIN"],)]))
            self._flush()

    def __repr__(self):
        return f"<SwapConnection {self.peer}>"

    @property
    def idle(self):
        return not self.running and not self.jobs and not self.out and \
            not self.reader.buffered and not self.session.files

    # ---- reading -------------------------------------------------------------------
    def on_readable(self):
        data = self._recv(READ_SIZE)
        if data is None:
            return
        if not data:
            self.close()
            return
        if self.tls is not None:
            data = self._decrypt(data)
            if data is None:
                return
        self._take(data)

    def _take(self, data):
        if not data:
            return
        try:
            self.reader.feed(data)
            while not self.closed and not self.closing:
                message = self.reader.next()
                if message is None:
                    break
                self._message(*message)
        except swap.ProtocolError as exc:
            log.info("SWAP %s: protocol error, closing: %s", self.peer, exc)
            self.close()
            return
        self._flush()

    def _message(self, msg_type, records):
        if not self.authenticated:
            if msg_type != T.SASL_REQUEST:
                log.info("SWAP %s: %s before authentication, closing", self.peer,
                         _name(msg_type))
                self.close()
                return
            self._authenticate(records[0])
            return
        if msg_type == T.SASL_REQUEST:
            return  # a second one after success is ignored
        if msg_type in NODE_ONLY and not self.is_peer:
            return
        for record in records:
            self.jobs.append((msg_type, record))

    def _authenticate(self, record):
        mechanism, payload = record
        if mechanism != "PLAIN":
            log.info("SWAP %s: unknown SASL mechanism %r, closing", self.peer, mechanism[:40])
            self.close()
            return
        fields = bytes(payload).split(b"\0")
        admin = self.service.admin
        ok = len(fields) == 3 and fields[1] and fields[2] and admin is not None and \
            admin.check_password(fields[1], fields[2])
        if not ok:
            log.info("SWAP %s: authentication failed", self.peer)
            self._queue(swap.encode(T.SASL_RESPONSE, [(int(SaslCode.FAILED), b"")]))
            self.closing = True
            return
        self.authenticated = True
        self.deadline = time.monotonic() + self.config.timeout_idle
        self._queue(swap.encode(T.SASL_RESPONSE, [(int(SaslCode.OK), b"")]))

    def _throttle(self):
        if self.closed:
            return
        full = len(self.jobs) >= MAX_JOBS or self.out_bytes >= MAX_OUT
        want = (0 if full else READ) | (WRITE if self.out or self.raw_out else 0)
        self._watch(want)

    # ---- jobs ----------------------------------------------------------------------
    def _next(self):
        """Run queued requests in order while nothing runs and nothing is being sent
        (a reply may still use a file a later request closes)."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while not self.running and self.jobs and not self.out and not self.closed:
                msg_type, record = self.jobs.popleft()
                if msg_type in ON_THREAD and self.worker.offloader is not None:
                    self.running = True
                    self.worker.offloader.submit(
                        lambda: self._run(msg_type, record), self._job_done)
                    return
                self._emit(self._run(msg_type, record))
                self._flush()
        finally:
            self._advancing = False

    def _job_done(self, future):
        self.running = False
        try:
            items = future.result()
        except Exception:
            log.exception("SWAP %s: request failed", self.peer)
            items = []
            self.close()
        if self.closed:
            for item in items:
                if type(item) is Segments:
                    self._segments_done(item)
            self.session.close()  # what this job may have opened
            return
        self._emit(items)
        self._flush()

    def _run(self, msg_type, record):
        """The reply items of one request record (on a thread for disk work)."""
        disk = ON_THREAD.get(msg_type)
        if disk is not None:
            return disk(self.session, *record)
        answer = ON_LOOP.get(msg_type)
        # CREATE_FG, node-only messages of peers: nothing to answer
        return [answer(self)] if answer is not None else []

    def _list_fg(self):
        return swap.encode(T.FG_LIST, [(g.uuid, [g.slice], [g.namespace])
                                       for g in self.service.groups])

    def _list_slices(self):
        slices = sorted((g.slice for g in self.service.groups), key=java_order)
        return swap.encode(T.SLICE_ONLINE, [(s,) for s in slices])

    def _list_peers(self):
        return swap.encode(T.LIST_PEER_RESULT, [(ip.packed, port)
                                                for ip, port in self.service.peers])

    def _partition_details(self):
        try:
            vfs = os.statvfs(self.config.docroot)
            free, total = vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize
        except OSError:
            free = total = 0
        slices = sorted((g.slice for g in self.service.groups), key=java_order)
        return swap.encode(T.PARTITION_DETAILS, [(self.service.partition,
                                                  f"storage-node {self.config.volume_id}",
                                                  free, total, slices)])

    # ---- writing -------------------------------------------------------------------
    def _emit(self, items):
        for item in items:
            self._queue(item)

    def _queue(self, item):
        self.out.append(item)
        self.out_bytes += item.remaining if type(item) is Segments else len(item)

    def on_writable(self):
        if self.tls is not None and self.raw_out:
            if not self._send_raw():
                return
        self._flush()

    def _flush(self):
        if self.closed or self.handshaking:
            return
        try:
            while self.out:
                item = self.out[0]
                if type(item) is Segments:
                    if not self._send_segments(item):
                        break
                    self.out.popleft()
                    self._segments_done(item)
                    continue
                sent = self._send(item)
                self.out_bytes -= sent
                if sent < len(item):
                    self.out[0] = memoryview(item)[sent:]
                    break
                self.out.popleft()
        except OSError as exc:
            log.debug("SWAP %s: sending failed: %s", self.peer, exc)
            self.close()
            return
        if not self.out and not self.raw_out and self.closing:
            self.close()
            return
        if not self.out and not self.running:
            self.deadline = time.monotonic() + (self.config.timeout_idle
                                                if self.authenticated
                                                else self.config.timeout_read_header)
        self._throttle()
        if not self.out:
            self._next()

    def _send_segments(self, item):
        """Send what the socket takes of a Segments item: True once all of it is out."""
        while True:
            if item.pending:
                sent = self._send(item.pending)
                item.pending = item.pending[sent:]
                if item.pending:
                    return False
                continue
            if item.seg_left:
                sent = self._send_file(item)
                if sent is None:
                    return False
                item.offset += sent
                item.seg_left -= sent
                self.out_bytes -= sent
                continue
            if item.remaining:
                length = min(SEGMENT, item.remaining)
                item.pending = segment_header(item.fid, item.offset, length)
                item.seg_left = length
                item.remaining -= length
                continue
            if item.close:
                item.pending, item.close = item.close, None
                continue
            return True

    def _send_file(self, item):
        """Data bytes of the current segment sent (None: the socket is full)."""
        if self.tls is None:
            try:
                sent = os.sendfile(self.fd, item.fd, item.offset, item.seg_left)
            except WOULD_BLOCK:
                return None
            if sent == 0:
                raise OSError(errno.EIO, "the file shrank while being sent")
            return sent
        if self.raw_out:
            return None
        data = os.pread(item.fd, min(item.seg_left, 64 << 10), item.offset)
        if not data:
            raise OSError(errno.EIO, "the file shrank while being sent")
        return self._send(data) or None

    def _send(self, data):
        """Plaintext bytes handed to the socket (or to TLS): how many were taken."""
        if self.tls is None:
            try:
                return self.sock.send(data)
            except WOULD_BLOCK:
                return 0
        if self.raw_out:
            return 0
        obj, _, outgoing = self.tls
        taken = obj.write(data)
        self.raw_out = outgoing.read()
        self._send_raw()
        return taken

    def _segments_done(self, item):
        if item.owned:
            self.session.stream_done(item.fid)
        item.release()

    # ---- TLS -----------------------------------------------------------------------
    def _decrypt(self, data):
        """Plaintext of received bytes (None: nothing for the session yet)."""
        obj, incoming, outgoing = self.tls
        incoming.write(data)
        if self.handshaking:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                self._pump_tls()
                return None
            except ssl.SSLError as exc:
                log.info("SWAP %s: TLS handshake failed: %s", self.peer, exc)
                self.close()
                return None
            self.handshaking = False
            self._pump_tls()
            if not self.authenticated:
                self._queue(swap.encode(T.SASL_MECHANISMS, [(["PLAIN"],)]))
            self._flush()
        plain = []
        while True:
            try:
                piece = obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: plaintext from here on
                return b"".join(plain) + self._leave_tls()
            except ssl.SSLError as exc:
                log.info("SWAP %s: TLS error: %s", self.peer, exc)
                self.close()
                return None
            if not piece:  # an SSLObject reads b"" once close_notify came (no data
                # raises SSLWantReadError)
                return b"".join(plain) + self._leave_tls()
            plain.append(piece)
        self._pump_tls()
        return b"".join(plain)

    def _leave_tls(self):
        """The client shut TLS down: answer close_notify, go on in plaintext; the
        bytes that followed its close_notify are the first plaintext ones."""
        obj, incoming, outgoing = self.tls
        if not self.authenticated:
            self.close()
            return b""
        try:
            obj.unwrap()
        except ssl.SSLError:
            pass
        self.raw_out += outgoing.read()
        rest = incoming.read()
        self.tls = None
        self._send_raw()
        return rest

    def _pump_tls(self):
        if self.tls is not None:
            self.raw_out += self.tls[2].read()
            self._send_raw()

    def _send_raw(self):
        """Send pending encrypted bytes: True once none are left."""
        while self.raw_out:
            try:
                sent = self.sock.send(self.raw_out)
            except WOULD_BLOCK:
                self._watch(self._events | WRITE)
                return False
            except OSError:
                self.close()
                return False
            self.raw_out = self.raw_out[sent:]
        return True

    # ---- life cycle ----------------------------------------------------------------
    def on_timeout(self):
        if self.running:
            self.deadline = time.monotonic() + self.config.timeout_idle
            return
        log.info("SWAP %s: timed out", self.peer)
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        for item in self.out:
            if type(item) is Segments:
                self._segments_done(item)
        self.out.clear()
        self.jobs.clear()
        if not self.running:  # else the job's end closes what it opened
            self.session.close()
        self._detach()


def _address(peer):
    host = peer.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _name(msg_type):
    try:
        return MessageType(msg_type).name
    except ValueError:
        return str(msg_type)


# the reply of each request answered on the loop (lists kept in memory)
ON_LOOP = {T.LIST_PARTITIONS: SwapConnection._partition_details,
           T.LIST_FG: SwapConnection._list_fg,
           T.LIST_SLICES: SwapConnection._list_slices,
           T.LIST_PEERS: SwapConnection._list_peers}
