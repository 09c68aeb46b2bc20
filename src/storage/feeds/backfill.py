"""Backfill: a feed added to a volume that already holds chunks is owed those chunks
too, as a feed created on a running cluster works through the existing content.

When the delivery process starts and finds a feed its queue has never seen (the
first start with feeds, or a feed added by SIGHUP), it marks the feed for backfill
(unless the feed says ``backfill = false``). A thread of the delivery process then
walks the volume's hash directories in order and queues, for each feed being
backfilled, every chunk whose full path matches the feed's filter:
- never over a row a request recorded (``INSERT OR IGNORE``): a chunk PUT or DELETEd
  meanwhile keeps what its request owes;
- one transaction per hash directory, which also moves the feed's cursor (the last
  directory done), so a restarted process goes on where it stopped and never queues
  a directory twice;
- memory is one directory's names at a time, whatever the volume holds;
- the delivery threads start on the queued rows at once (they only read the queue).
A chunk deleted after it was queued is dropped at delivery (nothing left to copy).
After a SIGHUP, the scan starts only once the previous image's workers are gone: they
record for the previous feeds, and a chunk one of them stored behind the scan would
be missed.
"""
import logging
import os
import threading
import time

from storage.errors import StorageError
from storage.feeds import decoded_path
from storage.feeds.queue import FeedQueue
from storage.rawx import meta as chunkmeta

log = logging.getLogger(__name__)

LOG_EVERY = 30.0  # seconds between two progress lines


class Backfill(threading.Thread):
    """The scan thread: backfills ``feeds`` (Feed objects marked in the queue) of the
    volume of ``repo``; stops early when ``stopping`` is set."""

    def __init__(self, config, repo, feeds, stopping, older=()):
        super().__init__(name="feeds-backfill", daemon=True)
        self.config = config
        self.repo = repo
        self.feeds = feeds
        self.stopping = stopping
        self.older = older

    def _wait_older(self):
        """Wait until the processes of ``older`` are gone: the previous image's
        workers record for the previous feeds, so a chunk one of them stores while
        the scan runs could be missed. Once they are gone, every chunk on disk is
        either seen by the scan or recorded by a worker that knows the new feeds."""
        waiting = list(self.older)
        if waiting:
            log.info("feeds backfill: waiting for %d processes of the previous "
                     "configuration to finish", len(waiting))
        while waiting and not self.stopping.wait(0.1):
            waiting = [pid for pid in waiting if _alive(pid)]

    def run(self):
        self._wait_older()
        if self.stopping.is_set():
            return
        fqueue = FeedQueue(self.config.docroot, durable=self.config.fsync)
        try:
            marks = fqueue.backfills()
            for feed in self.feeds:
                if feed.id in marks and not self.stopping.is_set():
                    self._scan(fqueue, feed, *marks[feed.id])
        except Exception:
            log.exception("feeds backfill failed; it goes on at the next start")
        finally:
            fqueue.close()

    def _scan(self, fqueue, feed, cursor, started, queued):
        log.info("feed %d: backfill %s (older chunks of the volume)",
                 feed.id, "resumes after " + repr(cursor) if cursor is not None else "starts")
        last_log = time.monotonic()
        for leaf in self.repo.leaf_dirs():
            if self.stopping.is_set():
                return
            if cursor is not None and leaf <= cursor:
                continue
            queued += fqueue.backfill_step(feed.id, self._matching(feed, leaf), leaf)
            if time.monotonic() - last_log >= LOG_EVERY:
                last_log = time.monotonic()
                log.info("feed %d: backfill at %s, %d chunks queued", feed.id, leaf, queued)
        fqueue.backfill_step(feed.id, [], None, finished=True)
        log.info("feed %d: backfill done, %d chunks queued in %.0fs", feed.id, queued,
                 time.time() - started)

    def _matching(self, feed, leaf):
        """The chunk ids of hash directory ``leaf`` that ``feed`` wants."""
        ids = self.repo.chunk_ids_in(leaf)
        if not feed.prefix:
            return ids
        wanted = []
        for chunk_id in ids:
            try:
                reader = self.repo.reader(chunk_id)
            except StorageError:
                continue  # gone since the listing
            try:
                stored = chunkmeta.StoredMeta(chunk_id, reader.read_attrs())
            except StorageError:
                continue
            finally:
                reader.close()
            if feed.matches(decoded_path(stored.fullpath)):
                wanted.append(chunk_id)
        return wanted



def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
