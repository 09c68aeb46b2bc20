"""Chunk events to beanstalkd (spec rawx.md section 8): a bounded queue and one sender.

``BeanstalkEvents.emit()`` is called from request handlers: it turns the event into its
JSON job body and appends it to a bounded in-memory queue; it never blocks on the network
and never raises. A daemon thread owns the only TCP connection to beanstalkd: ``use
<tube>``, then pipelined ``put`` commands, a batch at a time, each batch acknowledged
before the next is taken.

Delivery is at-least-once: events whose ``INSERTED`` reply has not been read when the
connection breaks are sent again, first and in order, once a new connection is up, so a
consumer may see an event twice after a beanstalkd restart, never out of order. Replies
that retrying cannot fix (JOB_TOO_BIG, BURIED, EXPECTED_CRLF, ...) drop the event and
count it in ``failed``; "not now" replies (DRAINING, OUT_OF_MEMORY, INTERNAL_ERROR) keep it
and send it again after a pause: only then may it arrive after events queued behind it
that the same pipelined batch already delivered.

Memory: an event is about 1 KiB of JSON, so the default 10000 events is ~10 MiB per
worker process.

Overflow policy: when the queue holds ``max_queue`` events (counting those in flight),
``emit()`` drops the NEW event (the queue stays a gap-free run of the oldest events, so
what arrives is always an ordered prefix plus what came after the outage). Each drop is
counted in ``dropped`` and logged, at most once per ``LOG_INTERVAL`` seconds.

Fork safety: the object starts a thread and holds a lock, which do not survive
``fork()``. Create it in each worker process after the fork (``Worker.__init__``), never
in the master. An object used in another process than its creator's drops every event
(counted) and logs an error once.
"""
import collections
import ipaddress
from json.encoder import encode_basestring_ascii as _escape
import logging
import os
import socket
import threading
import time

from storage.config import ConfigError

log = logging.getLogger(__name__)

SCHEME = "beanstalk://"
DEFAULT_TUBE = "oio"
PRIORITY = 2147483648  # 2**31, as the reference rawx
DELAY = 0
TTR = 120  # seconds a consumer may hold the job
BATCH = 64  # puts sent before reading their replies
LOG_INTERVAL = 10.0  # seconds between two warnings of one kind
MAX_REPLY_LINE = 256  # bytes: beanstalkd's replies to put/use are short

# The data object's keys, in the spec's order; every one is always present.
DATA_KEYS = (
    "volume_id", "volume_service_id", "full_path", "container_id", "content_path",
    "content_version", "content_id", "content_storage_policy", "metachunk_hash",
    "metachunk_size", "chunk_id", "content_chunk_method", "chunk_position", "chunk_hash",
    "chunk_size",
)

# put replies: the job was not stored and sending it again cannot help (our framing or
# size), or it was stored (buried) and sending again would duplicate it.
PERMANENT = frozenset((b"JOB_TOO_BIG", b"EXPECTED_CRLF", b"BURIED", b"BAD_FORMAT",
                       b"UNKNOWN_COMMAND"))
# put replies: the server cannot take it now; the same job is sent again after a pause.
TRANSIENT = frozenset((b"DRAINING", b"OUT_OF_MEMORY", b"INTERNAL_ERROR"))
# after these the server's view of the byte stream may differ from ours: reconnect.
RESYNC = frozenset((b"BAD_FORMAT", b"UNKNOWN_COMMAND", b"EXPECTED_CRLF"))

_TUBE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        b"-+/;.$_()")


class ProtocolError(Exception):
    """beanstalkd said something we cannot follow; the connection is dropped."""


def parse_event_agent(url):
    """``beanstalk://host:port`` -> (host, port); IPv6 hosts in brackets
    (``beanstalk://[::1]:11300`` -> ("::1", 11300)). Raises ConfigError (a ValueError)
    with a one-line reason naming ``event_agent``."""
    def bad(reason):
        return ConfigError(f"event_agent: {reason}, got {url!r}")

    if not isinstance(url, str) or not url.startswith(SCHEME):
        raise bad("expected beanstalk://host:port")
    rest = url[len(SCHEME):]
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise bad("unterminated '[' in the IPv6 address")
        host, after = rest[1:end], rest[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("invalid IPv6 address in brackets") from None
        if not after.startswith(":"):
            raise bad("missing :port after the IPv6 address")
        port_text = after[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise bad("missing :port")
        if ":" in host:
            raise bad("an IPv6 address needs brackets, as in beanstalk://[::1]:11300")
        if not host or any(c in host for c in "/@?# \t"):
            raise bad("invalid host")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise bad("port must be a number in 1..65535")
    return host, int(port_text)


def from_config(config, **kwargs):
    """A started BeanstalkEvents for a Config with ``events`` on, else None. Call it in
    the worker process, after the fork. kwargs go to BeanstalkEvents."""
    if not config.events:
        return None
    return BeanstalkEvents.from_url(config.event_agent, **kwargs)


def _text(value):
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return str(value)


_KEY_PREFIXES = tuple(f'"{key}":' for key in DATA_KEYS)
_KNOWN = frozenset(DATA_KEYS)


def encode_event(event_type, request_id, data, when_us):
    """The job body (bytes): compact JSON, keys in the spec's order, every data key
    present with ``""`` for empty values, values as strings; other keys of ``data``
    follow. ``when_us``: microseconds since the epoch."""
    # Built by hand around json's C string escaper: the same bytes as json.dumps with
    # compact separators, in half the time (emit() runs in the request path).
    get = data.get
    fields = []
    for prefix, key in zip(_KEY_PREFIXES, DATA_KEYS):
        value = get(key)
        fields.append(prefix + _escape(value if value.__class__ is str else _text(value)))
    if not _KNOWN.issuperset(data):
        fields.extend(_escape(str(key)) + ":" + _escape(_text(value))
                      for key, value in data.items() if key not in _KNOWN)
    return "".join((
        '{"event":', _escape(_text(event_type)), ',"when":', str(int(when_us)),
        ',"request_id":', _escape(_text(request_id) or "-"), ',"data":{', ",".join(fields),
        "}}")).encode("ascii")


class _Throttle:
    """Rate-limited warnings: one line per kind per ``interval`` seconds, with how many
    were held back since the last one."""

    def __init__(self, interval=LOG_INTERVAL):
        self.interval = interval
        self._last = {}
        self._held = collections.Counter()

    def warning(self, kind, msg, *args):
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            msg += " (%d similar messages suppressed)"
            args += (held,)
        log.warning(msg, *args)


class BeanstalkEvents:
    """Sends events as beanstalkd jobs from a background thread.

    host, port: the beanstalkd address; tube: the tube jobs go to; max_queue: most events
    held in memory, in flight included; connect_timeout, io_timeout: seconds a connect or
    a reply may take before the connection is given up; backoff_min, backoff_max: the
    first and the largest pause (seconds) between reconnection attempts, doubling.

    Counters (read them from any thread): ``sent`` (jobs INSERTED), ``dropped`` (events
    lost without reaching beanstalkd: queue full, or still queued when close() gave up),
    ``failed`` (events beanstalkd refused for good: JOB_TOO_BIG, BURIED, ...),
    ``queued`` (held in memory now), ``connected``.
    """

    def __init__(self, host, port, tube=DEFAULT_TUBE, max_queue=10000, *,
                 connect_timeout=2.0, io_timeout=5.0, backoff_min=0.1, backoff_max=5.0,
                 batch=BATCH):
        raw_tube = tube.encode("ascii", "replace")
        if not 0 < len(raw_tube) <= 200 or raw_tube[:1] == b"-" or \
                not set(raw_tube) <= _TUBE_CHARS:
            raise ValueError(f"invalid beanstalkd tube name {tube!r}")
        if max_queue < 1 or batch < 1:
            raise ValueError("max_queue and batch must be >= 1")
        self.host = host
        self.port = int(port)
        self.tube = tube
        self.max_queue = int(max_queue)
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.batch = int(batch)
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.connected = False
        self._tube_raw = raw_tube
        self._put_prefix = b"put %d %d %d " % (PRIORITY, DELAY, TTR)
        self._queue = collections.deque()
        self._inflight = []  # taken from the queue, not yet acknowledged (sender only)
        self._held = 0  # len(queue) + len(inflight), kept under the lock
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._unsent = 0  # events the stopped sender could not send
        self._deadline = None  # monotonic time close() gives up at
        self._sock = None
        self._rbuf = bytearray()
        self._throttle = _Throttle()
        self._pid = os.getpid()
        self._wrong_process_logged = False
        self._thread = threading.Thread(target=self._run, name="beanstalk-events", daemon=True)
        self._thread.start()

    @classmethod
    def from_url(cls, url, **kwargs):
        """Build from an ``event_agent`` value (ConfigError if it is not valid)."""
        host, port = parse_event_agent(url)
        return cls(host, port, **kwargs)

    @property
    def queued(self):
        """Events held in memory now (waiting or in flight)."""
        return self._held

    def counters(self):
        """A snapshot of the counters, as a dict (for /stat and logs)."""
        return {"sent": self.sent, "dropped": self.dropped, "failed": self.failed,
                "queued": self._held, "connected": self.connected}

    # ---- the caller's side ---------------------------------------------------------
    def emit(self, event_type, request_id, data):
        """Queue one event; ``data``: the dict of StoredMeta.event_data(). Never blocks
        on the network, never raises; a lost event is counted in ``dropped``."""
        try:
            body = encode_event(event_type, request_id, data, time.time_ns() // 1000)
        except Exception:  # a caller's bug must not fail the request
            log.exception("cannot encode %s event", event_type)
            with self._cond:
                self.dropped += 1
            return
        if os.getpid() != self._pid:
            self._from_wrong_process()
            return
        with self._cond:
            if self._closing or self._held >= self.max_queue:
                self.dropped += 1
                full = not self._closing
            else:
                self._queue.append(body)
                self._held += 1
                if self._held == 1:
                    self._cond.notify()
                return
        if full:
            self._throttle.warning("full", "event queue full (%d events): dropping new events, "
                                   "%d dropped so far", self.max_queue, self.dropped)
        else:
            self._throttle.warning("closed", "event emitted after close(): dropped")

    def _from_wrong_process(self):
        self.dropped += 1
        if not self._wrong_process_logged:
            self._wrong_process_logged = True
            log.error("BeanstalkEvents used in process %d but created in %d (create it "
                      "after fork): events are dropped", os.getpid(), self._pid)

    def close(self, timeout=5.0):
        """Send what can be sent within ``timeout`` seconds, then stop the thread and
        close the connection. Events still held then are counted in ``dropped``.
        Returns True when everything queued was sent."""
        with self._cond:
            if self._deadline is None:
                self._deadline = time.monotonic() + max(0.0, timeout)
            self._closing = True
            self._cond.notify_all()
        if os.getpid() == self._pid:
            self._thread.join(max(0.0, timeout) + self.io_timeout + 1.0)
        return not self._thread.is_alive() and self._unsent == 0

    # ---- the sender thread ---------------------------------------------------------
    def _remaining(self):
        """Seconds left before close() gives up, or None while not closing."""
        if self._deadline is None:
            return None
        return self._deadline - time.monotonic()

    def _timeout(self, wanted):
        left = self._remaining()
        return wanted if left is None else max(0.001, min(wanted, left))

    def _run(self):
        backoff = self.backoff_min
        try:
            while True:
                with self._cond:
                    # Sleep until there is work or close() asks us to stop.
                    while not self._inflight and not self._queue and not self._closing:
                        self._cond.wait(1.0)  # woken by emit(); the timeout is a safety net
                    left = self._remaining()
                    if self._closing and (self._held == 0 or left <= 0):
                        break
                if self._sock is None:
                    if not self._connect():
                        self._pause(backoff)
                        backoff = min(backoff * 2, self.backoff_max)
                        continue
                    backoff = self.backoff_min
                with self._cond:
                    room = self.batch - len(self._inflight)
                    while room > 0 and self._queue:
                        self._inflight.append(self._queue.popleft())
                        room -= 1
                try:
                    retry = self._send_inflight()
                except (OSError, ProtocolError) as exc:
                    self._throttle.warning("conn", "beanstalkd %s:%d: connection lost (%s), "
                                           "%d events kept to resend", self.host, self.port,
                                           exc, len(self._inflight))
                    self._disconnect()
                    self._pause(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                if retry:
                    self._pause(backoff)  # the server is busy: let it breathe
                    backoff = min(backoff * 2, self.backoff_max)
                else:
                    backoff = self.backoff_min
        except Exception:  # a bug here must not kill events silently
            log.exception("beanstalk event sender crashed")
        finally:
            self._disconnect()
            with self._cond:
                lost = self._held
                self._unsent = lost
                self.dropped += lost
                self._held = 0
                self._queue.clear()
                self._inflight.clear()
                self._closing = True
            if lost:
                log.warning("event sender stopped with %d events unsent (dropped)", lost)

    def _pause(self, seconds):
        """Wait ``seconds`` unless close() runs out of time first."""
        with self._cond:
            left = self._remaining()
            if left is not None:
                seconds = min(seconds, max(0.0, left))
            if seconds > 0:
                self._cond.wait(seconds)

    def _connect(self):
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=self._timeout(self.connect_timeout))
        except OSError as exc:
            self._throttle.warning("connect", "beanstalkd %s:%d: cannot connect (%s), %d "
                                   "events queued", self.host, self.port, exc, self._held)
            return False
        self._sock = sock
        self._rbuf.clear()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._timeout(self.io_timeout))
            sock.sendall(b"use " + self._tube_raw + b"\r\n")
            reply = self._read_line()
        except (OSError, ProtocolError) as exc:
            self._throttle.warning("connect", "beanstalkd %s:%d: no reply to use (%s)",
                                   self.host, self.port, exc)
            self._disconnect()
            return False
        if reply != b"USING " + self._tube_raw:
            log.error("beanstalkd %s:%d: unexpected reply to use %s: %r", self.host,
                      self.port, self.tube, bytes(reply[:80]))
            self._disconnect()
            return False
        self.connected = True
        log.info("beanstalkd %s:%d: connected, tube %s", self.host, self.port, self.tube)
        return True

    def _disconnect(self):
        self.connected = False
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._rbuf.clear()

    def _read_line(self):
        """One reply line without its CRLF; the socket's timeout bounds each recv."""
        while True:
            end = self._rbuf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._rbuf[:end])
                del self._rbuf[:end + 2]
                return line
            if len(self._rbuf) > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            data = self._sock.recv(4096)
            if not data:
                raise ProtocolError("connection closed by beanstalkd")
            self._rbuf += data

    def _send_inflight(self):
        """Pipeline a put for each in-flight event and read the replies. Acknowledged
        and refused events leave the in-flight list; returns True when some are kept to
        be sent again (transient refusal). Raises OSError/ProtocolError with the
        unacknowledged events still in flight."""
        inflight = self._inflight
        if not inflight:
            return False
        prefix = self._put_prefix
        out = bytearray()
        for body in inflight:
            out += prefix
            out += b"%d\r\n" % len(body)
            out += body
            out += b"\r\n"
        self._sock.settimeout(self._timeout(self.io_timeout))
        self._sock.sendall(out)
        keep = []
        done = 0
        resync = None
        try:
            for body in inflight:
                line = self._read_line()
                word = line.split(b" ", 1)[0]
                if word == b"INSERTED":
                    self.sent += 1
                elif word in TRANSIENT:
                    keep.append(body)
                    self._throttle.warning("transient", "beanstalkd %s:%d: put refused "
                                           "for now (%s), will retry", self.host, self.port,
                                           word.decode("ascii"))
                elif word in PERMANENT:
                    self.failed += 1
                    self._throttle.warning("failed", "beanstalkd %s:%d: put refused (%s), "
                                           "event of %d bytes dropped, %d failed so far",
                                           self.host, self.port,
                                           line[:80].decode("ascii", "replace"), len(body),
                                           self.failed)
                else:  # this event stays in flight: it is sent again
                    raise ProtocolError(f"unexpected reply to put: {bytes(line[:80])!r}")
                done += 1
                if word in RESYNC:
                    resync = word.decode("ascii")
                    break
        finally:
            # whatever was not acknowledged stays in flight, in order, ahead of the queue
            rest = inflight[done:]
            self._inflight = keep + rest
            with self._cond:
                self._held -= len(inflight) - len(self._inflight)
        if resync is not None:
            raise ProtocolError(f"stream out of step after {resync}")
        return bool(keep)
