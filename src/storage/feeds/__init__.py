"""Feeds (spec send.md): every chunk the node stores is queued, durably, for every
feed whose filter matches it, and a delivery process works through the queue.

- ``config``: the TOML feed definitions (``feeds_config``);
- ``queue``: the durable queue (SQLite, WAL) on the volume;
- ``inbox``: the workers' record files, which the delivery process ingests;
- ``deliver``: the delivery process the master forks;
- ``storage.send.feeds``: the feed form of SEND, which waits on this queue;
- this module: ``FeedRecorder``, what request handlers call at the moment a chunk's
  201 or 204 is decided, before the reply goes out (one write to the worker's inbox),
  and what ``/stat`` and a verbose HEAD read (the queue).
"""
import contextlib
import email.utils
import logging
import threading
import time
from urllib.parse import unquote_to_bytes

from storage.events import encode_event
from storage.feeds import inbox
from storage.feeds.queue import DELETED, DONE, FAILED, NEW, FeedQueue, QueueError

log = logging.getLogger(__name__)

__all__ = ["FeedRecorder", "QueueError", "decoded_path", "from_config"]


def decoded_path(fullpath):
    """A stored full path (``acct/cont/obj/ver/id``, parts percent-encoded) decoded to
    bytes: what a feed's ``prefix`` is compared with."""
    if not fullpath:
        return b""
    raw = fullpath.encode("latin-1") if isinstance(fullpath, str) else fullpath
    return unquote_to_bytes(raw) if b"%" in raw else raw


def from_config(config):
    """A FeedRecorder for a Config with feeds, else None. Call it after the fork."""
    return FeedRecorder(config) if config.feeds else None


class FeedRecorder:
    """A worker's side of the feeds: records chunks in its inbox, reads their status
    in the queue."""

    def __init__(self, config, queue=None):
        self.feeds = config.feeds
        self.volume_id = config.listen
        self.service_id = config.service_id
        self.queue = queue or FeedQueue(config.docroot, durable=config.fsync)
        self._docroot = config.docroot
        self._durable = config.fsync
        self._side = None  # the I/O threads' connection (feed SEND), opened on first use
        self._side_lock = threading.Lock()
        self.inbox = inbox.InboxWriter(config.docroot, durable=config.fsync)

    def close(self):
        self.queue.close()
        self.inbox.close()
        if self._side is not None:
            self._side.close()

    @contextlib.contextmanager
    def side_queue(self):
        """The queue for an I/O thread (feed SEND), one user at a time: its own
        connection, so its transactions never interleave with the loop's."""
        with self._side_lock:
            if self._side is None:
                self._side = FeedQueue(self._docroot, durable=self._durable)
            yield self._side

    def _record(self, stored, reqid, op):
        """The inbox record of a chunk's event for the feeds it matches, or None."""
        path = decoded_path(stored.fullpath)
        parts = []
        event = b""
        for feed in self.feeds:
            if not feed.matches(path):
                continue
            if op == DELETED and not feed.deletes:
                parts.append((feed.id, inbox.FORGET))  # delivered: its row goes
            elif feed.kind == "index":
                if not event:
                    name = "storage.chunk.new" if op == NEW else "storage.chunk.deleted"
                    event = encode_event(name, reqid,
                                         stored.event_data(self.volume_id, self.service_id),
                                         time.time_ns() // 1000)
                parts.append((feed.id, inbox.OWED_EVENT))
            else:
                parts.append((feed.id, inbox.OWED))
        if not parts:
            return None
        return inbox.encode(time.time_ns(), op, stored.chunk_id, parts, event)

    def _append(self, stored, reqid, op):
        record = self._record(stored, reqid, op)
        if record is None:
            return
        try:
            self.inbox.append(record)
        except inbox.InboxError as exc:
            raise QueueError(str(exc)) from None

    def record_new(self, stored, reqid=""):
        """Record a chunk just stored (``stored``: its StoredMeta) for every matching
        feed, before its 201 is sent: one write to this process's inbox, which the
        delivery process moves into the queue. Raises QueueError if it cannot."""
        self._append(stored, reqid, NEW)

    def record_deleted(self, stored, reqid=""):
        """Record a chunk's deletion for the matching feeds with ``deletes = true``,
        before it is unlinked; the others forget the chunk once they delivered it.
        Raises QueueError if it cannot."""
        self._append(stored, reqid, DELETED)

    # ---- status -------------------------------------------------------------------
    def status_headers(self, stored):
        """``Feed-<id>-Status`` and ``Feed-<id>-StatusTime`` for a verbose HEAD: 0 done
        (or not the feed's chunk), 1 not delivered yet (time blank), another positive
        number a failure (the status that failed)."""
        rows = self.queue.status(stored.chunk_id)
        path = decoded_path(stored.fullpath)
        out = []
        for feed in self.feeds:
            row = rows.get(feed.id)
            when = ""
            if not feed.matches(path):
                status = 0
            elif row is None or row[0] not in (DONE, FAILED):
                status = 1
            else:
                state, code, updated = row
                status = 0 if state == DONE else (code if code > 1 else 2)
                when = email.utils.formatdate(updated, usegmt=True)
            out.append((f"Feed-{feed.id}-Status", str(status)))
            out.append((f"Feed-{feed.id}-StatusTime", when))
        return out

    def counts(self):
        """[(feed id, pending, done, errors, state)] of every configured feed; pending
        counts the records still in the workers' inbox files too."""
        try:
            offsets = self.queue.inbox_offsets()
            known = self.queue.counts()
        except Exception as exc:  # a /stat must answer even if the queue is sick
            log.error("cannot read the feeds queue counters: %s", exc)
            offsets, known = {}, {}
        waiting = inbox.backlog(self._docroot, offsets)
        out = []
        for feed in self.feeds:
            pending, done, errors, state = known.get(feed.id, (0, 0, 0, "ok"))
            out.append((feed.id, pending + waiting.get(feed.id, 0), done, errors, state))
        return out

    def stat_lines(self):
        """The pinned /stat lines of every feed."""
        lines = []
        for fid, pending, done, errors, state in self.counts():
            lines += [f"gauge feed.{fid}.pending {pending}", f"counter feed.{fid}.done {done}",
                      f"counter feed.{fid}.errors {errors}", f"config feed.{fid}.state {state}"]
        return lines
