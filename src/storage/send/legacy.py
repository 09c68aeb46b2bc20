"""The legacy SEND transfer (no ``feedid``/``feedtype``): one chunk to one node of
another cluster, run on a transfer thread.

Steps, each of which can end the SEND before any byte of data moves:
1. ``GET /info`` on the target: its namespace must be ``Castor-System-Cluster``.
2. ``HEAD /<ID>`` on the target: 200 means it has the chunk already (409).
3. ``PUT /<ID>`` of the data and metadata (``storage.send.push``).
The outcome is a TaskOutcome: the code, a reason line when it is not the target's own
answer, ``Remote cluster returned: <code>`` and the ``Castor-System-Result`` trailer.
"""
import logging
import socket
import threading

from storage.http.reply import TaskOutcome
from storage.rawxclient import RawxClient, RawxError
from storage.send.push import Cancelled, CorruptSource, TargetRefused, push_chunk

log = logging.getLogger(__name__)

RESULT_TRAILER = "Castor-System-Result"


def outcome(code, reason=None):
    """The TaskOutcome of a SEND that ended with ``code``."""
    lines = [reason] if reason else []
    lines.append(f"Remote cluster returned: {code}")
    return TaskOutcome(code, lines, [(RESULT_TRAILER, str(code))])


class LegacySend:
    """One SEND of chunk ``chunk_id`` (open ``reader``, its ``stored`` metadata) to
    ``target`` ("host:port") of cluster ``cluster``; ``auth`` (user, password) for
    the target or None; ``timeout`` seconds per connect or stalled read/write."""

    def __init__(self, chunk_id, reader, stored, target, cluster, auth, timeout):
        self.chunk_id = chunk_id
        self.reader = reader
        self.stored = stored
        self.target = target
        self.cluster = cluster
        self.auth = auth
        self.timeout = timeout
        self.cancelled = False
        self._started = False
        self._client = None  # the RawxClient while run() uses it
        self._lock = threading.Lock()  # orders cancel() against run()'s start and end

    def cancel(self):
        """Called from the loop thread: a transfer that never started releases the
        chunk now; a running one has its target connection shut down, which ends a
        send blocked on a slow target at once (the target discards the partial chunk)."""
        with self._lock:
            self.cancelled = True
            if not self._started:
                self._started = True  # run() will not start
                self.reader.close()
            elif self._client is not None:
                self._client.shutdown()

    def run(self, progress):
        """The whole SEND (on a transfer thread): a TaskOutcome. ``progress()`` is
        called once the data transfer begins."""
        with self._lock:
            if self._started:
                return outcome(499, "cancelled: the client left")
            self._started = True
            client = self._client = RawxClient(self.target, timeout=self.timeout,
                                               auth=self.auth)
        try:
            return self._run(client, progress)
        except (Cancelled, RawxError) as exc:
            if self.cancelled:
                log.info("SEND %s to %s: cancelled, the client left", self.chunk_id,
                         self.target)
                return outcome(499, "cancelled: the client left")
            if exc.status is not None:
                return outcome(exc.status)
            timed_out = isinstance(exc.__cause__, (socket.timeout, TimeoutError))
            code = 504 if timed_out else 502
            log.warning("SEND %s to %s: %s", self.chunk_id, self.target, exc)
            return outcome(code, f"error: {exc}")
        finally:
            with self._lock:
                self._client = None
                client.close()
            self.reader.close()

    def _run(self, client, progress):
        namespace = client.info().get("namespace", "")
        if namespace != self.cluster:
            return outcome(400, f"error: Castor-System-Cluster is {self.cluster!r} but the "
                                f"target's namespace is {namespace!r}")
        try:
            code = push_chunk(client, self.chunk_id, self.chunk_id, self.reader, self.stored,
                              self._check_cancel, progress)
        except CorruptSource as exc:
            log.error("SEND %s to %s: not sent, the source chunk is corrupt: %s",
                      self.chunk_id, self.target, exc)
            return outcome(412, f"error: source chunk {self.chunk_id} is corrupt: {exc}")
        except TargetRefused as exc:
            return outcome(exc.status, f"error: {exc}")
        if code == 201:
            log.info("SEND %s to %s (%s): done", self.chunk_id, self.target, self.cluster)
        return outcome(code)

    def _check_cancel(self):
        if self.cancelled:
            raise Cancelled()
