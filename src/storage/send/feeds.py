"""The feed form of SEND (spec send.md, "Feed form"): ``SEND /<ID>?feedid=..&admin``
has the chunk processed now by the selected feeds and reports how each did.

The delivery itself stays the delivery process's (its targets, retries and per-feed
pauses): this SEND only puts the chunk first in line and watches the queue.
1. The first step decides per selected feed:
   - done before the request (or not the feed's chunk: nothing to transfer) and no
     ``forceReprocess``: ``Feed-<id>-Status: 0`` goes out at once in the 200 head;
   - a ``blocked`` feed is reported as it is, not retried (status 503);
   - otherwise its row is made due now: recorded again when it is missing (a chunk
     stored before the feed existed), failed, or forced; hurried when pending.
2. Each later step (every ``POLL`` seconds, on an I/O thread, which is free between
   steps) reads the chunk's rows: done is 0, failed is its code (> 1), a feed that
   became blocked is 503.
3. When every feed has a result, or the timeout expires (the rest are 1, time blank),
   the results go out as body lines and as trailers, all at the end.
"""
import email.utils
import logging
import re
import sqlite3
import time

from storage.errors import BadRequest
from storage.feeds import QueueError, decoded_path
from storage.feeds.queue import DONE, FAILED, NEW
from storage.http.reply import TaskOutcome, TaskWait

log = logging.getLogger(__name__)

POLL = 0.1  # seconds between two looks at the queue
BLOCKED = 503  # the status of a feed that is blocked: reported, not retried
TIMEOUT_MAX = 7 * 86400.0
TYPES = {"search": "index", "indexing": "index", "replication": "replication",
         "s3backup": "s3backup"}
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?\Z")
_YES = {"true": True, "yes": True, "false": False, "no": False}


def is_feed_send(args):
    return "feedid" in args or "feedtype" in args


def select_feeds(args, feeds):
    """The feeds a SEND's query arguments select: the union of its ``feedid`` and
    ``feedtype`` values, in id order. BadRequest for an id that is not a defined
    feed or a type that does not exist."""
    by_id = {feed.id: feed for feed in feeds}
    chosen = set()
    for value in args.get("feedid", ()):
        if value.lower() == "all":
            chosen.update(by_id)
            continue
        if not value.isascii() or not value.isdigit() or int(value) not in by_id:
            raise BadRequest(f"feedid {value[:20]!r} is not a defined feed")
        chosen.add(int(value))
    for value in args.get("feedtype", ()):
        value = value.lower()
        if value == "all":
            chosen.update(by_id)
        elif value in TYPES:
            chosen.update(f.id for f in feeds if f.kind == TYPES[value])
        else:
            raise BadRequest(f"feedtype {value[:20]!r} is not one of all, search, "
                             "indexing, replication, s3backup")
    return [by_id[fid] for fid in sorted(chosen)]


def parse_timeout(args, default):
    """Seconds to wait (None: no limit) from the ``timeout`` argument."""
    values = args.get("timeout", ["true"])
    value = values[-1].lower()
    if value in ("true", "yes"):
        return default
    if value in ("false", "no"):
        return None
    if not _NUMBER.match(value) or float(value) > TIMEOUT_MAX:
        raise BadRequest(f"timeout must be true, false or a number of seconds up to "
                         f"{TIMEOUT_MAX:.0f}, got {value[:20]!r}")
    return float(value)


def parse_force(args):
    values = args.get("forcereprocess", []) + args.get("force", [])
    force = False
    for value in values:
        if value.lower() not in _YES:
            raise BadRequest(f"forceReprocess must be yes, no, true or false, got "
                             f"{value[:20]!r}")
        force = force or _YES[value.lower()]
    return force


def http_date(when):
    return email.utils.formatdate(when, usegmt=True)


def status_fields(fid, status, when):
    return [(f"Feed-{fid}-Status", str(status)), (f"Feed-{fid}-StatusTime", when)]


class FeedSend:
    """One feed SEND of chunk ``chunk_id`` (``stored``: its StoredMeta) to ``feeds``
    (Feed objects) through ``recorder`` (the worker's FeedRecorder); ``timeout``
    seconds, or None for no limit; ``force``: process again what was done."""

    def __init__(self, recorder, chunk_id, stored, feeds, timeout, force):
        self.recorder = recorder
        self.chunk_id = chunk_id
        self.path = decoded_path(stored.fullpath)
        self.feeds = feeds
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.force = force
        self.waiting = None  # feed ids being processed, known after the first step
        self.results = {}  # feed id -> (status, StatusTime) of the processed feeds
        self.cancelled = False

    def cancel(self):
        """The client left: the next step ends it (the queue keeps its rows: the
        delivery goes on, as it would have without this SEND)."""
        self.cancelled = True

    def run(self, progress):
        """One step (on an I/O thread): a TaskWait, or the TaskOutcome at the end."""
        if self.cancelled:
            return TaskOutcome(499, ["cancelled: the client left"])
        try:
            with self.recorder.side_queue() as fqueue:
                if self.waiting is None:
                    head = self._start(fqueue)
                else:
                    head = None
                    self._poll(fqueue)
        except (QueueError, sqlite3.Error) as exc:  # a read fails as sqlite3.Error
            log.error("feed SEND %s: the feeds queue: %s", self.chunk_id, exc)
            return TaskOutcome(503, ["error: the feeds queue is unavailable"])
        expired = self.deadline is not None and time.monotonic() >= self.deadline
        if not self.waiting or expired:
            return self._outcome(head)
        return TaskWait(POLL, head)

    def _start(self, fqueue):
        """Report what is done, queue the rest now: -> the head's status headers."""
        rows = fqueue.status(self.chunk_id)
        states = {fid: counts[3] for fid, counts in fqueue.counts().items()}
        head = []
        record, hurry = [], []
        for feed in self.feeds:
            row = rows.get(feed.id)
            if not feed.matches(self.path):
                head += status_fields(feed.id, 0, "")  # nothing to transfer
            elif not self.force and row is not None and row[0] == DONE:
                head += status_fields(feed.id, 0, http_date(row[2]))
            elif states.get(feed.id) == "blocked":
                when = http_date(row[2]) if row is not None else ""
                self.results[feed.id] = (BLOCKED, when)
            elif row is None or row[0] == FAILED or self.force:
                record.append((self.chunk_id, feed.id, NEW, None))
            else:
                hurry.append(feed.id)
        fqueue.record(record)
        fqueue.hurry(self.chunk_id, hurry)
        self.waiting = [fid for _, fid, _, _ in record] + hurry
        if self.waiting:
            log.info("feed SEND %s: processing it now for feed(s) %s", self.chunk_id,
                     ", ".join(map(str, sorted(self.waiting))))
        return head

    def _poll(self, fqueue):
        rows = fqueue.status(self.chunk_id)
        states = {fid: counts[3] for fid, counts in fqueue.counts().items()}
        still = []
        for fid in self.waiting:
            row = rows.get(fid)
            if row is None:  # delivered and dropped (the chunk went meanwhile)
                self.results[fid] = (0, http_date(time.time()))
            elif row[0] == DONE:
                self.results[fid] = (0, http_date(row[2]))
            elif row[0] == FAILED:
                self.results[fid] = (row[1] if row[1] > 1 else 2, http_date(row[2]))
            elif states.get(fid) == "blocked":
                self.results[fid] = (BLOCKED, http_date(row[2]))
            else:
                still.append(fid)
        self.waiting = still

    def _outcome(self, head):
        for fid in self.waiting or ():
            self.results[fid] = (1, "")  # the timeout expired
        if self.waiting:
            log.info("feed SEND %s: timeout (%.1fs) with feed(s) %s still pending",
                     self.chunk_id, self.timeout, ", ".join(map(str, self.waiting)))
        fields = []
        for fid in sorted(self.results):
            fields += status_fields(fid, *self.results[fid])
        lines = [f"{name}: {value}" for name, value in fields]
        return TaskOutcome(200, lines, fields, head or ())
