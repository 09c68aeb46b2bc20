"""The feeds' durable queue: one SQLite database per volume, at
``<docroot>/.storage-node/feeds.db``, one row per (chunk, feed).

Why SQLite in WAL mode:
- durable across SIGKILL: a transaction is committed once its frames are written to the
  WAL file (the page cache has them; ``synchronous=NORMAL``), so a killed process
  loses nothing it committed. With ``fsync on`` the node uses ``synchronous=FULL``, so
  the queue is as durable against power loss as the chunk it describes;
- one main writer: the delivery process ingests what the workers record in their
  inbox files (``storage.feeds.inbox``: one ``write()`` on the request path instead
  of a transaction) and marks rows done; a feed SEND writes a row or two from a
  worker's I/O thread. WAL lets readers (``/stat``, a verbose HEAD) run beside the
  writer, and writers queue on the database lock with ``busy_timeout``;
- crash-safe: a torn write is rolled back at the next open, never half applied;
- bounded memory: the queue lives on disk; delivery takes a few rows at a time (its
  concurrency) whatever the queue's length, and ``/stat`` reads per-feed counters that
  triggers keep, never a count over the rows.

The directory starts with a dot: the chunk listing (``/list``), the hash directories
and SWAP's chunks group only see hex names, so RAWX never lists or serves it.

Workers never checkpoint (``wal_autocheckpoint=0``): a checkpoint syncs the database
and must not stall a request loop. The delivery process checkpoints (``checkpoint()``):
PASSIVE every second, and TRUNCATE as soon as the WAL passes ``WAL_LIMIT``, which
bounds the WAL under a steady stream of commits (PASSIVE alone let it reach 178 MiB
for 5,000 chunks with three feeds when the workers committed each chunk themselves:
bench/load_feeds.py --only pending).

Row states: PENDING (to deliver; ``next_at`` says when, later after a failure), DONE,
FAILED (cannot succeed by retrying: the local chunk is corrupt; ``code`` says why).
``updated`` is when a PENDING row was recorded (a failed attempt leaves it: it is
what "oldest pending" measures), and when a DONE or FAILED row was settled.

``feed_info`` holds, per feed, the last delivery error (``storage-node feeds
status``) and a retry request (``storage-node feeds retry``): the delivery process
looks at this small table every turn of its loop and forgets the feed's backoff when
it finds one, so an operator's retry needs no signal and works across a restart.
``gen`` grows whenever a row is recorded again, so a delivery that started before
(a chunk deleted while it was being copied) never marks the newer request done.
"""
import contextlib
import os
import sqlite3
import time

DIRECTORY = ".storage-node"
FILENAME = "feeds.db"
PENDING, DONE, FAILED = 0, 1, 2
NEW, DELETED = 0, 1
BUSY_TIMEOUT = 10.0  # seconds a writer waits for the lock before giving up
WAL_LIMIT = 8 << 20  # bytes of WAL that make the delivery process empty it

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    chunk_id TEXT NOT NULL,
    feed INTEGER NOT NULL,
    op INTEGER NOT NULL,            -- NEW or DELETED
    state INTEGER NOT NULL,         -- PENDING, DONE or FAILED
    gen INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,          -- epoch seconds: not before
    updated REAL NOT NULL,          -- epoch seconds: recorded, or last attempt
    code INTEGER NOT NULL DEFAULT 0,-- the failure's status (FAILED rows)
    last_error TEXT,
    body BLOB,                      -- the event job (index feeds), until delivered
    PRIMARY KEY (chunk_id, feed)
) WITHOUT ROWID;
-- the pending rows by due time; ``updated`` rides along so that "oldest pending" reads
-- this index alone. An index of its own on (feed, updated) made recording 1.6x dearer
-- on the request path (bench/load_feeds.py: 110 -> 180 us a chunk with three feeds).
CREATE INDEX IF NOT EXISTS due_at ON queue (feed, next_at, updated) WHERE state = 0;
DROP INDEX IF EXISTS due;
DROP INDEX IF EXISTS pending_since;
-- "requeue the failed rows" without a scan of the queue (no cost on recording)
CREATE INDEX IF NOT EXISTS failed ON queue (feed) WHERE state = 2;
CREATE TABLE IF NOT EXISTS counts (
    feed INTEGER PRIMARY KEY,
    pending INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'ok'
);
CREATE TABLE IF NOT EXISTS backfill (
    feed INTEGER PRIMARY KEY,       -- a feed whose older chunks are being queued
    cursor TEXT,                    -- the last hash directory done (NULL: none yet)
    started REAL NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS feed_info (
    feed INTEGER PRIMARY KEY,
    last_error TEXT,
    last_error_at REAL,
    retry_at REAL                   -- a retry asked for and not yet taken
);
CREATE TABLE IF NOT EXISTS inbox (
    name TEXT PRIMARY KEY,          -- a worker's inbox file (storage.feeds.inbox)
    offset INTEGER NOT NULL         -- bytes of it already ingested
);
CREATE TRIGGER IF NOT EXISTS queue_insert AFTER INSERT ON queue WHEN NEW.state = 0
BEGIN
    INSERT INTO counts (feed, pending) VALUES (NEW.feed, 1)
        ON CONFLICT (feed) DO UPDATE SET pending = pending + 1;
END;
CREATE TRIGGER IF NOT EXISTS queue_update AFTER UPDATE OF state ON queue
    WHEN (OLD.state = 0) != (NEW.state = 0)
BEGIN
    INSERT INTO counts (feed, pending) VALUES (NEW.feed, NEW.state = 0)
        ON CONFLICT (feed) DO UPDATE
        SET pending = pending + (NEW.state = 0) - (OLD.state = 0);
END;
CREATE TRIGGER IF NOT EXISTS queue_delete AFTER DELETE ON queue WHEN OLD.state = 0
BEGIN
    UPDATE counts SET pending = pending - 1 WHERE feed = OLD.feed;
END;
"""

# a record of a worker's inbox: never over a row changed after its time
_INGEST = """
INSERT INTO queue (chunk_id, feed, op, state, next_at, updated, body)
VALUES (?, ?, ?, 0, ?, ?, ?)
ON CONFLICT (chunk_id, feed) DO UPDATE SET
    op = excluded.op, state = 0, gen = gen + 1, attempts = 0, next_at = excluded.next_at,
    updated = excluded.updated, code = 0, last_error = NULL, body = excluded.body
WHERE excluded.updated > queue.updated
"""

_RECORD = """
INSERT INTO queue (chunk_id, feed, op, state, next_at, updated, body)
VALUES (?, ?, ?, 0, ?, ?, ?)
ON CONFLICT (chunk_id, feed) DO UPDATE SET
    op = excluded.op, state = 0, gen = gen + 1, attempts = 0, next_at = excluded.next_at,
    updated = excluded.updated, code = 0, last_error = NULL, body = excluded.body
"""


def db_path(docroot):
    return os.path.join(docroot, DIRECTORY, FILENAME)


class QueueError(Exception):
    """The queue cannot be written (disk full, locked too long, corrupt)."""


class FeedQueue:
    """One connection to the queue of the volume at ``docroot`` (open it in the
    process that uses it: a connection never crosses a fork)."""

    def __init__(self, docroot, durable=False, checkpoints=False):
        path = db_path(docroot)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                  check_same_thread=False, cached_statements=64)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        if not checkpoints:
            self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.executescript(SCHEMA)

    def close(self):
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE (the write lock now, waiting up to BUSY_TIMEOUT), then
        COMMIT, or ROLLBACK if the body raised."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- recording (workers, on the request path) ------------------------------------
    def record(self, rows, now=None, forget_done=()):
        """Queue ``rows`` [(chunk_id, feed id, op, body or None)] and drop the DONE rows
        ``forget_done`` [(chunk_id, feed id)], in one transaction. Raises QueueError when
        the database cannot take them."""
        if not rows and not forget_done:
            return
        now = time.time() if now is None else now
        db = self.db
        try:
            if len(rows) == 1 and not forget_done:
                chunk_id, feed, op, body = rows[0]
                db.execute(_RECORD, (chunk_id, feed, op, now, now, body))
                return
            with self._transaction():
                db.executemany(_RECORD, [(c, f, o, now, now, b) for c, f, o, b in rows])
                if forget_done:
                    db.executemany("DELETE FROM queue WHERE chunk_id = ? AND feed = ? "
                                   "AND state = 1", forget_done)
        except sqlite3.Error as exc:
            raise QueueError(f"feeds queue {self.path}: {exc}") from None

    # ---- the inbox (the delivery process) ---------------------------------------------
    def inbox_offsets(self):
        """{inbox file name: bytes already ingested}."""
        return dict(self.db.execute("SELECT name, offset FROM inbox"))

    def ingest(self, records, offsets, feed_ids):
        """Apply inbox ``records`` (in time order) for the feeds of ``feed_ids`` and
        set the files' ``offsets`` {name: offset}, in one transaction."""
        from storage.feeds.inbox import FORGET, OWED_EVENT
        with self._transaction() as db:
            for rec in records:
                when = rec.ts_ns / 1e9
                rows = [(rec.chunk_id, fid, rec.op, when, when,
                         rec.event if part == OWED_EVENT else None)
                        for fid, part in rec.parts if part != FORGET and fid in feed_ids]
                if rows:
                    db.executemany(_INGEST, rows)
                forget = [(rec.chunk_id, fid, when) for fid, part in rec.parts
                          if part == FORGET]
                if forget:
                    db.executemany("DELETE FROM queue WHERE chunk_id = ? AND feed = ? "
                                   "AND state = 1 AND updated <= ?", forget)
            db.executemany("INSERT INTO inbox (name, offset) VALUES (?, ?) ON CONFLICT "
                           "(name) DO UPDATE SET offset = excluded.offset",
                           list(offsets.items()))

    def forget_inbox(self, names):
        """Drop the offsets of inbox files that are gone."""
        with self._transaction() as db:
            db.executemany("DELETE FROM inbox WHERE name = ?", [(n,) for n in names])

    def hurry(self, chunk_id, feeds, now=None):
        """Make the pending rows of ``chunk_id`` for ``feeds`` due now (a feed SEND):
        a row waiting out its own backoff is tried at the next turn; the feed's own
        pause, while its target fails, still holds."""
        if not feeds:
            return
        now = time.time() if now is None else now
        marks = ",".join("?" * len(feeds))
        try:
            self.db.execute(f"UPDATE queue SET next_at = ? WHERE chunk_id = ? AND state = 0 "
                            f"AND next_at > ? AND feed IN ({marks})",
                            (now, chunk_id, now) + tuple(feeds))
        except sqlite3.Error as exc:
            raise QueueError(f"feeds queue {self.path}: {exc}") from None

    # ---- reading (status) ----------------------------------------------------------------
    def status(self, chunk_id):
        """{feed id: (state, code, updated)} of a chunk's rows."""
        rows = self.db.execute("SELECT feed, state, code, updated FROM queue "
                               "WHERE chunk_id = ?", (chunk_id,)).fetchall()
        return {feed: (state, code, updated) for feed, state, code, updated in rows}

    def counts(self):
        """{feed id: (pending, done, errors, state)}."""
        rows = self.db.execute("SELECT feed, pending, done, errors, state FROM counts")
        return {feed: (pending, done, errors, state)
                for feed, pending, done, errors, state in rows}

    # ---- delivery (the delivery process) ------------------------------------------------
    def prepare_feeds(self, feed_ids):
        """At the delivery process's start: drop the rows of feeds no longer defined,
        make a counts row per feed, and recount ``pending`` (heals any drift).
        -> {feed id: rows dropped} for the feeds that went away."""
        db = self.db
        with self._transaction():
            gone = {}
            marks = ",".join("?" * len(feed_ids)) or "0"  # ids are positive
            for (feed, count) in db.execute(
                    f"SELECT feed, COUNT(*) FROM queue WHERE feed NOT IN ({marks}) "
                    "GROUP BY feed", tuple(feed_ids)).fetchall():
                gone[feed] = count
            db.execute(f"DELETE FROM queue WHERE feed NOT IN ({marks})", tuple(feed_ids))
            db.execute(f"DELETE FROM counts WHERE feed NOT IN ({marks})", tuple(feed_ids))
            db.execute(f"DELETE FROM backfill WHERE feed NOT IN ({marks})", tuple(feed_ids))
            db.execute(f"DELETE FROM feed_info WHERE feed NOT IN ({marks})", tuple(feed_ids))
            db.execute("UPDATE feed_info SET retry_at = NULL")  # a new process: no backoff
            for fid in feed_ids:
                db.execute("INSERT OR IGNORE INTO counts (feed) VALUES (?)", (fid,))
            db.execute("UPDATE counts SET state = 'ok', pending = (SELECT COUNT(*) FROM "
                       "queue WHERE queue.feed = counts.feed AND state = 0)")
        return gone

    def new_feeds(self, feed_ids):
        """The feeds of ``feed_ids`` this queue has never seen (no counts row yet):
        ask it before ``prepare_feeds``."""
        known = {row[0] for row in self.db.execute("SELECT feed FROM counts")}
        return [fid for fid in feed_ids if fid not in known]

    # ---- backfill (the delivery process's scan thread) ----------------------------------
    def start_backfill(self, feed_ids, now=None):
        """Mark ``feed_ids`` as to be backfilled from the first hash directory."""
        now = time.time() if now is None else now
        self.db.executemany("INSERT OR IGNORE INTO backfill (feed, started) VALUES (?, ?)",
                            [(fid, now) for fid in feed_ids])

    def backfills(self):
        """{feed id: (cursor or None, started, queued)} of the unfinished backfills."""
        return {feed: (cursor, started, queued) for feed, cursor, started, queued in
                self.db.execute("SELECT feed, cursor, started, queued FROM backfill")}

    def backfill_step(self, feed, rows, cursor, finished=False, now=None):
        """Queue ``rows`` [chunk_id] of a backfill for ``feed`` (NEW, but never over a
        row a request recorded) and move its cursor, in one transaction; ``finished``
        ends the backfill. -> rows actually queued."""
        now = time.time() if now is None else now
        db = self.db
        with self._transaction():
            cur = db.executemany("INSERT OR IGNORE INTO queue (chunk_id, feed, op, state, "
                                 "next_at, updated) VALUES (?, ?, 0, 0, ?, ?)",
                                 [(cid, feed, now, now) for cid in rows])
            added = max(cur.rowcount, 0)  # the rows inserted (a trigger's are not counted)
            if finished:
                db.execute("DELETE FROM backfill WHERE feed = ?", (feed,))
            else:
                db.execute("UPDATE backfill SET cursor = ?, queued = queued + ? "
                           "WHERE feed = ?", (cursor, added, feed))
        return added

    def due(self, feed, limit, now=None):
        """Up to ``limit`` pending rows of ``feed`` whose time has come, oldest first:
        [(chunk_id, op, gen, attempts, body, updated)]."""
        now = time.time() if now is None else now
        return self.db.execute(
            "SELECT chunk_id, op, gen, attempts, body, updated FROM queue "
            "WHERE feed = ? AND state = 0 AND next_at <= ? ORDER BY next_at LIMIT ?",
            (feed, now, limit)).fetchall()

    def settle(self, outcomes, now=None):
        """Write delivery outcomes in one transaction. ``outcomes``: a list of
        (feed, chunk_id, gen, kind, retry_at, code, error) where kind is "done"
        (delivered, or nothing left to deliver), "drop" (done, and the row goes: a
        delivered delete), "retry" (failed, due again at ``retry_at``), "later" (not
        attempted: due again at ``retry_at``, no error counted) or "failed"
        (FAILED with ``code``). A row recorded again since (another gen) is left as
        it is: its new request is still owed."""
        now = time.time() if now is None else now
        db = self.db
        done, errors, last_errors = {}, {}, {}
        with self._transaction():
            for feed, chunk_id, gen, kind, retry_at, code, error in outcomes:
                key = (chunk_id, feed, gen)
                if kind == "done":
                    cur = db.execute("UPDATE queue SET state = 1, attempts = attempts + 1, "
                                     "updated = ?, code = 0, last_error = NULL, body = NULL "
                                     "WHERE chunk_id = ? AND feed = ? AND gen = ?",
                                     (now,) + key)
                    done[feed] = done.get(feed, 0) + cur.rowcount
                elif kind == "drop":
                    cur = db.execute("DELETE FROM queue WHERE chunk_id = ? AND feed = ? "
                                     "AND gen = ?", key)
                    done[feed] = done.get(feed, 0) + cur.rowcount
                elif kind == "later":
                    db.execute("UPDATE queue SET next_at = ? WHERE chunk_id = ? AND "
                               "feed = ? AND gen = ?", (retry_at,) + key)
                elif kind == "retry":
                    db.execute("UPDATE queue SET attempts = attempts + 1, next_at = ?, "
                               "last_error = ? WHERE chunk_id = ? AND feed = ? AND gen = ?",
                               (retry_at, error) + key)
                    errors[feed] = errors.get(feed, 0) + 1
                    last_errors[feed] = error
                else:
                    db.execute("UPDATE queue SET state = 2, attempts = attempts + 1, "
                               "updated = ?, code = ?, last_error = ? WHERE chunk_id = ? "
                               "AND feed = ? AND gen = ?", (now, code, error) + key)
                    errors[feed] = errors.get(feed, 0) + 1
                    last_errors[feed] = error
            for feed, count in done.items():
                db.execute("UPDATE counts SET done = done + ? WHERE feed = ?", (count, feed))
            for feed, count in errors.items():
                db.execute("UPDATE counts SET errors = errors + ? WHERE feed = ?",
                           (count, feed))
            for feed, error in last_errors.items():
                db.execute("INSERT INTO feed_info (feed, last_error, last_error_at) "
                           "VALUES (?, ?, ?) ON CONFLICT (feed) DO UPDATE SET "
                           "last_error = excluded.last_error, "
                           "last_error_at = excluded.last_error_at", (feed, error, now))

    def set_state(self, feed, state):
        self.db.execute("UPDATE counts SET state = ? WHERE feed = ?", (state, feed))

    def checkpoint(self, truncate=False):
        """Move the WAL's frames into the database. PASSIVE never waits on others, but
        under a steady stream of commits it never catches up, and the WAL only starts
        over once it did. TRUNCATE waits for the running commit, holds the writers
        back while it copies (a few milliseconds for a WAL of a few MiB), and empties
        the WAL."""
        self.db.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if truncate else 'PASSIVE'})")

    def wal_size(self):
        """Bytes in the WAL file (0 if there is none)."""
        try:
            return os.stat(self.path + "-wal").st_size
        except FileNotFoundError:
            return 0

    # ---- operators (storage-node feeds) ------------------------------------------------
    def oldest_pending(self, feed):
        """When the oldest pending row of ``feed`` was recorded (epoch seconds), or
        None: a scan of the feed's entries in the ``due_at`` index, which holds the
        time (about 50 ms per 100,000 pending rows: for the CLI, never a request)."""
        row = self.db.execute("SELECT MIN(updated) FROM queue WHERE feed = ? AND state = 0",
                              (feed,)).fetchone()
        return row[0]

    def last_error(self, feed):
        """(error text, epoch seconds) of the last failed delivery of ``feed``, or None."""
        row = self.db.execute("SELECT last_error, last_error_at FROM feed_info WHERE "
                              "feed = ? AND last_error IS NOT NULL", (feed,)).fetchone()
        return tuple(row) if row else None

    def request_retry(self, feed, now=None):
        """Make every pending row of ``feed`` due now, put its FAILED rows back to
        pending, and ask the delivery process to forget the feed's backoff.
        -> (pending rows made due now, failed rows requeued)."""
        now = time.time() if now is None else now
        db = self.db
        try:
            with self._transaction():
                due = db.execute("UPDATE queue SET next_at = ? WHERE feed = ? AND state = 0 "
                                 "AND next_at > ?", (now, feed, now)).rowcount
                requeued = db.execute(
                    "UPDATE queue SET state = 0, attempts = 0, next_at = ?, updated = ?, "
                    "code = 0 WHERE feed = ? AND state = 2", (now, now, feed)).rowcount
                db.execute("INSERT INTO feed_info (feed, retry_at) VALUES (?, ?) "
                           "ON CONFLICT (feed) DO UPDATE SET retry_at = excluded.retry_at",
                           (feed, now))
        except sqlite3.Error as exc:
            raise QueueError(f"feeds queue {self.path}: {exc}") from None
        return due, requeued

    def take_retry_requests(self):
        """The feeds whose retry was asked for since the last call (the delivery
        process, every turn: a look at a table of one row per feed)."""
        # one statement: a request that comes meanwhile is never lost
        return [row[0] for row in self.db.execute(
            "UPDATE feed_info SET retry_at = NULL WHERE retry_at IS NOT NULL RETURNING feed")]
