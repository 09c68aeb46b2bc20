"""The delivery process: works through the feeds' durable queue, outside the request
path. The master forks it (one per node) when feeds are defined, starts it again if it
dies, and replaces it on SIGHUP like a worker.

Shape: one main thread owns the queue's connection; it takes due rows, at most a
feed's ``concurrency`` at a time, hands them to that feed's threads, and writes their
outcomes back in one transaction per batch. Memory is bounded by the feeds'
concurrency, never by the queue's length.

Per feed:
- replication: ``push_chunk`` to the target (HEAD, then PUT with every metadata
  header and the hash, verified on the way; 409 there counts as done); a delete is a
  DELETE there (404 counts as done), sent only once the chunk is gone here;
- search / indexing: one beanstalkd job per chunk on the feed's tube, whose body is
  the storage.chunk.new (or .deleted) event recorded with the request;
- s3backup: one object per chunk in the feed's bucket, its data uncompressed and its
  metadata headers as S3 user metadata or a sidecar object (``feeds.s3``, which alone
  imports boto3); a delete deletes the object with ``deletes = true``.

A feed the queue has never seen is owed the chunks stored before it (``backfill``).

Retries: a failed delivery is due again after an exponential backoff with jitter
(0.5 s doubling up to the feed's ``retry_max``). While a feed's target keeps failing,
the feed itself backs off the same way and sends one probe at a time; after
``BLOCKED_AFTER`` failures in a row its state is ``blocked``. A feed never waits for
another: each has its own threads, and the main thread never does network I/O.
``storage-node feeds retry`` makes a feed's rows due now and leaves a request in the
queue's ``feed_info`` table; the main loop takes such requests every turn (at most
``POLL`` seconds apart) and forgets that feed's backoff at once.
Delivery is at least once: a row is marked done only after its target acknowledged
it, so a delivery interrupted by a crash is made again (the targets are idempotent).

One delivery process per volume: it holds an exclusive ``flock`` on
``.storage-node/feeds.lock`` (which holds its pid) for its life, so after a SIGHUP the
new one starts delivering only once the old one has finished.
"""
import contextlib
import fcntl
import logging
import os
import queue as queuemod
import random
import signal
import socket
import threading
import time

from storage.errors import ChunkNotFound, StorageError
from storage.feeds.backfill import Backfill
from storage.feeds.inbox import Ingester
from storage.feeds.probe import BATCH, SwapProbe
from storage.feeds.queue import DELETED, DIRECTORY, WAL_LIMIT, FeedQueue
from storage.rawx import meta as chunkmeta
from storage.rawxclient import RawxClient, RawxError
from storage.repo import FsChunkRepo
from storage.send.push import CorruptSource, TargetRefused, push_chunk

log = logging.getLogger(__name__)

POLL = 0.1  # seconds between two looks for new rows while idle
INGEST_EVERY = 0.05  # seconds between two looks at the workers' inbox files
RETRY_MIN = 0.5  # seconds: the first pause after a failure
BLOCKED_AFTER = 5  # failures in a row that make a feed "blocked"
CHECKPOINT_EVERY = 1.0  # seconds between two WAL checkpoints
WAL_LOOK_EVERY = 0.1  # seconds between two looks at the WAL's size
STILL_HERE_GRACE = 300.0  # seconds a recorded delete may wait for its unlink
LOG_EVERY = 30.0  # seconds between two warnings of one failing feed
LOCK_NAME = "feeds.lock"
NICE = 10  # the delivery yields the CPU to the request loops when both want it


def backoff(failures, cap, rng=random):
    """Seconds to wait after ``failures`` (>= 1) failures in a row: doubling from
    RETRY_MIN up to ``cap``, the upper half jittered (two nodes never retry in step)."""
    delay = min(cap, RETRY_MIN * (2 ** min(failures - 1, 30)))
    return delay / 2 + rng.uniform(0, delay / 2)


class Outcome:
    """What one delivery attempt came to: ``kind`` done | drop | retry | failed."""
    __slots__ = ("kind", "code", "error")

    def __init__(self, kind, code=0, error=None):
        self.kind = kind
        self.code = code
        self.error = error


DONE = Outcome("done")
DROP = Outcome("drop")


@contextlib.contextmanager
def local_chunk(repo, chunk_id):
    """(open reader, StoredMeta) of a queued chunk, closed on leaving; None when it
    was deleted since it was queued (nothing left to deliver: DROP)."""
    try:
        reader = repo.reader(chunk_id)
    except ChunkNotFound:
        yield None
        return
    try:
        yield reader, chunkmeta.StoredMeta(chunk_id, reader.read_attrs())
    finally:
        reader.close()


# ---- the deliveries ----------------------------------------------------------------------
class ReplicationTarget:
    """A feed thread's connection to a replication feed's RAWX node."""

    def __init__(self, feed, repo, timeout):
        self.feed = feed
        self.repo = repo
        self.client = RawxClient(feed.base_url, timeout=timeout)

    def close(self):
        self.client.close()

    def deliver(self, chunk_id, op, body, recorded_at, absent=False):
        """``absent``: the target said over SWAP it has no such chunk (no HEAD)."""
        if op == DELETED:
            return self._delete(chunk_id, recorded_at)
        with local_chunk(self.repo, chunk_id) as chunk:
            if chunk is None:
                return DROP
            reader, stored = chunk
            push_chunk(self.client, chunk_id, chunk_id, reader, stored, absent=absent)
        return DONE

    def _delete(self, chunk_id, recorded_at):
        if os.path.lexists(self.repo.chunk_path(chunk_id)):
            # recorded just before the unlink: wait for it (or give up on a delete
            # that never happened: the chunk stays, and so does its copy)
            if time.time() - recorded_at > STILL_HERE_GRACE:
                return DONE
            return Outcome("wait", 0, "the chunk is not deleted here yet")
        status = self.client.delete(chunk_id)
        if status in (200, 204, 404):
            return DROP
        raise RawxError(f"DELETE /{chunk_id} on {self.client.base_url}: {status}", status)


class IndexTarget:
    """A feed thread's connection to a search/indexing feed's beanstalkd: ``use`` the
    tube, then one ``put`` per chunk, acknowledged before the next."""

    TTR = 120
    PRIORITY = 2147483648

    def __init__(self, feed, repo, timeout, volume_id, service_id):
        self.feed = feed
        self.repo = repo
        self.timeout = timeout
        self.volume_id = volume_id
        self.service_id = service_id
        self.sock = None
        self.rbuf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _line(self):
        while b"\r\n" not in self.rbuf:
            data = self.sock.recv(4096)
            if not data:
                raise OSError("beanstalkd closed the connection")
            self.rbuf += data
            if len(self.rbuf) > 4096:
                raise OSError("beanstalkd reply line too long")
        line, self.rbuf = self.rbuf.split(b"\r\n", 1)
        return line

    def _connect(self):
        host, port = self.feed.address
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.rbuf = b""
        tube = self.feed.tube.encode("ascii")
        self.sock.sendall(b"use " + tube + b"\r\n")
        if self._line() != b"USING " + tube:
            raise OSError("beanstalkd refused the tube")

    def deliver(self, chunk_id, op, body, recorded_at):
        if body is None:  # recorded before this feed was an index feed
            if op == DELETED:
                return DROP
            with local_chunk(self.repo, chunk_id) as chunk:
                if chunk is None:
                    return DROP
                stored = chunk[1]
            from storage.events import encode_event
            body = encode_event("storage.chunk.new", "",
                                stored.event_data(self.volume_id, self.service_id),
                                time.time_ns() // 1000)
        try:
            if self.sock is None:
                self._connect()
            self.sock.sendall(b"put %d 0 %d %d\r\n%s\r\n" % (self.PRIORITY, self.TTR,
                                                             len(body), body))
            reply = self._line()
        except OSError:
            self.close()
            raise
        word = reply.split(b" ", 1)[0]
        if word == b"INSERTED":
            return DROP if op == DELETED else DONE
        if word in (b"JOB_TOO_BIG", b"BURIED"):
            # BURIED: stored, but out of memory for the ready queue: it is delivered
            return (DROP if op == DELETED else DONE) if word == b"BURIED" else \
                Outcome("failed", 413, "beanstalkd: JOB_TOO_BIG")
        self.close()
        return Outcome("retry", 503, f"beanstalkd: {reply[:80].decode('ascii', 'replace')}")


# ---- one feed ---------------------------------------------------------------------------
class FeedRunner:
    """A feed's threads and its retry state (main thread only, but for the queues).

    Rows go to the threads through ``inbox`` as (row, absent). A replication feed with
    ``swap`` has one more thread, the prober: the main thread hands it due rows a
    batch at a time, it asks the target over SWAP which chunks it has (one frame), and
    passes the others on to the PUT threads with ``absent`` set (no HEAD)."""

    def __init__(self, feed, make_target, results, timeout=30.0):
        self.feed = feed
        self.inbox = queuemod.SimpleQueue()
        self.results = results
        self.inflight = set()  # chunk ids handed to the threads
        self.failures = 0  # transient failures in a row
        self.paused_until = 0.0
        self.state = "ok"
        self.last_warning = 0.0
        self.threads = [threading.Thread(target=self._work, args=(make_target,),
                                         name=f"feed-{feed.id}-{i}", daemon=True)
                        for i in range(feed.concurrency)]
        self.batches = None
        if feed.kind == "replication" and feed.swap:
            self.batches = queuemod.SimpleQueue()
            self.threads.append(threading.Thread(
                target=self._probe, args=(SwapProbe(feed, timeout),),
                name=f"feed-{feed.id}-swap", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self):
        for _ in range(self.feed.concurrency):
            self.inbox.put(None)
        if self.batches is not None:
            self.batches.put(None)

    def _work(self, make_target):
        target = make_target()
        try:
            while True:
                item = self.inbox.get()
                if item is None:
                    return
                row, absent = item
                chunk_id, op, gen, attempts, body, recorded_at = row
                if time.time() < self.paused_until:
                    # the feed paused after this row was handed over: not now
                    self.results.put((self, row, Outcome("wait", 0, "the feed is paused")))
                    continue
                try:
                    if absent:
                        outcome = target.deliver(chunk_id, op, body, recorded_at, absent=True)
                    else:
                        outcome = target.deliver(chunk_id, op, body, recorded_at)
                except CorruptSource as exc:
                    outcome = Outcome("failed", 412, f"corrupt local chunk: {exc}")
                except (TargetRefused, RawxError) as exc:
                    outcome = Outcome("retry", exc.status or 502, str(exc))
                except (OSError, StorageError) as exc:
                    outcome = Outcome("retry", 502, f"{exc.__class__.__name__}: {exc}")
                except Exception as exc:  # a bug: keep the row, say so
                    log.exception("feed %d: delivering %s failed", self.feed.id, chunk_id)
                    outcome = Outcome("retry", 500, f"internal error: {exc!r}")
                self.results.put((self, row, outcome))
        finally:
            target.close()

    def _probe(self, probe):
        """The prober thread: a batch of new rows -> done for the chunks the target
        has, the PUT threads (no HEAD) for the others; HTTP as usual if SWAP fails."""
        try:
            while True:
                batch = self.batches.get()
                if batch is None:
                    return
                present = probe.present([row[0] for row in batch])
                for row in batch:
                    if present is None:
                        self.inbox.put((row, False))
                    elif row[0] in present:
                        self.results.put((self, row, DONE))  # as a 409 there
                    else:
                        self.inbox.put((row, True))
        finally:
            probe.close()

    def slots(self):
        """Rows this feed can take now: its concurrency (a SWAP batch when it asks
        its target over SWAP), one probe while failing."""
        if self.failures:
            width = 1
        else:
            width = BATCH if self.batches is not None else self.feed.concurrency
        return width - len(self.inflight)

    def refill(self, fqueue, now):
        if now < self.paused_until:
            return
        free = self.slots()
        if free <= 0:
            return
        batch = []
        for row in fqueue.due(self.feed.id, free + len(self.inflight), now):
            if free <= 0:
                break
            chunk_id = row[0]
            if chunk_id in self.inflight:
                continue
            self.inflight.add(chunk_id)
            free -= 1
            if self.batches is not None and row[1] != DELETED and not self.failures:
                batch.append(row)
            else:
                self.inbox.put((row, False))
        if batch:
            self.batches.put(batch)

    def settled(self, outcome, now):
        """Account for one outcome; -> the row's next attempt time (retries)."""
        if outcome.kind == "retry":
            self.failures += 1
            pause = backoff(self.failures, self.feed.retry_max)
            self.paused_until = max(self.paused_until, now + pause)
            if now - self.last_warning >= LOG_EVERY:
                self.last_warning = now
                log.warning("feed %d (%s %s): delivery failed (%s); %d failures in a row, "
                            "next try in %.1fs", self.feed.id, self.feed.type,
                            self.feed.target, outcome.error, self.failures, pause)
        elif outcome.kind in ("done", "drop", "failed"):
            if self.failures:
                log.info("feed %d: delivering again after %d failures", self.feed.id,
                         self.failures)
            self.failures = 0
            self.paused_until = 0.0
        if outcome.kind != "wait":
            self.state = "ok" if self.failures == 0 else \
                "blocked" if self.failures >= BLOCKED_AFTER else "retrying"


# ---- the process ------------------------------------------------------------------------
class Deliverer:
    """The delivery process's main object: ``run()`` until SIGTERM."""

    def __init__(self, config, older=()):
        self.config = config
        self.older = older
        self.stopping = False
        self.stop_event = threading.Event()  # for the backfill thread
        self.results = queuemod.SimpleQueue()
        self.repo = FsChunkRepo(config.docroot, config.hash_width, config.hash_depth)
        self.runners = []
        self.fqueue = None
        self.ingester = None
        self.lock_fd = None

    def _on_signal(self, signum, frame):
        self.stopping = True
        self.stop_event.set()

    def _make_target(self, feed):
        timeout = self.config.send_timeout
        if feed.kind == "replication":
            return lambda: ReplicationTarget(feed, self.repo, timeout)
        if feed.kind == "s3backup":
            from storage.feeds.s3 import S3Target, SharedClient  # boto3 only if needed
            shared = SharedClient(feed, timeout, feed.concurrency)
            return lambda: S3Target(feed, self.repo, timeout, shared)
        return lambda: IndexTarget(feed, self.repo, timeout, self.config.listen,
                                   self.config.service_id)

    def _lock(self):
        """Wait for the volume's delivery lock (a previous process may be finishing)."""
        path = os.path.join(self.config.docroot, DIRECTORY, LOCK_NAME)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        self.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        waited = False
        while not self.stopping:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.ftruncate(self.lock_fd, 0)  # who delivers: for operators and tests
                os.pwrite(self.lock_fd, b"%d\n" % os.getpid(), 0)
                return True
            except BlockingIOError:
                if not waited:
                    log.info("feeds: waiting for the previous delivery process to finish")
                    waited = True
                time.sleep(0.05)
        return False

    def run(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK,
                               {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        if not self._lock():
            return
        self.fqueue = FeedQueue(self.config.docroot, checkpoints=True)
        feeds = self.config.feeds
        new = set(self.fqueue.new_feeds([f.id for f in feeds]))
        for fid, count in self.fqueue.prepare_feeds([f.id for f in feeds]).items():
            log.warning("feed %d is no longer defined: %d queued rows dropped", fid, count)
        self.ingester = Ingester(self.config.docroot, self.fqueue, [f.id for f in feeds])
        self._ingest()  # what the workers recorded while no delivery process ran
        self.fqueue.start_backfill([f.id for f in feeds if f.id in new and f.backfill])
        backfills = self.fqueue.backfills()
        if backfills:
            Backfill(self.config, self.repo, [f for f in feeds if f.id in backfills],
                     self.stop_event, self.older).start()
        for feed in feeds:
            self.runners.append(FeedRunner(feed, self._make_target(feed), self.results,
                                           self.config.send_timeout))
        log.info("feeds: delivering %s", ", ".join(
            f"feed {r.feed.id} ({r.feed.type} {r.feed.target})" for r in self.runners)
            or "nothing")
        try:
            self._loop()
        finally:
            for runner in self.runners:
                runner.stop()
            self.fqueue.close()

    def _loop(self):
        last_checkpoint = last_look = last_ingest = time.monotonic()
        while not self.stopping:
            if time.monotonic() - last_ingest >= INGEST_EVERY:
                last_ingest = time.monotonic()
                self._ingest()
            now = time.time()
            self._take_retries()
            for runner in self.runners:
                runner.refill(self.fqueue, now)
            wait = POLL
            for runner in self.runners:
                if runner.paused_until > now:
                    wait = min(wait, runner.paused_until - now)
            batch = self._collect(max(0.001, wait))
            if batch:
                self._settle(batch)
            mono = time.monotonic()
            if mono - last_look >= WAL_LOOK_EVERY:
                # the workers' rows too: they never checkpoint themselves
                last_look = mono
                if self.fqueue.wal_size() > WAL_LIMIT:
                    self.fqueue.checkpoint(truncate=True)
                    last_checkpoint = mono
                elif mono - last_checkpoint >= CHECKPOINT_EVERY:
                    self.fqueue.checkpoint()
                    last_checkpoint = mono

    def _ingest(self):
        """Move what the workers recorded in their inbox files into the queue."""
        try:
            self.ingester.run()
        except Exception:  # sqlite3.Error, OSError: the records wait for the next turn
            log.exception("feeds: ingesting the workers' records failed")

    def _take_retries(self):
        """Forget the backoff of the feeds an operator retried (storage-node feeds
        retry): they take rows again at once, at their full concurrency. A feed that
        was failing is "retrying" until an outcome says more: "ok" once a delivery
        succeeds, "blocked" again after as many failures in a row as before."""
        wanted = set(self.fqueue.take_retry_requests())
        for runner in self.runners:
            if runner.feed.id in wanted:
                log.info("feed %d: retry asked for; its backoff is cleared", runner.feed.id)
                runner.failures = 0
                runner.paused_until = 0.0
                if runner.state != "ok":
                    runner.state = "retrying"
                    self.fqueue.set_state(runner.feed.id, "retrying")

    def _collect(self, wait):
        """Outcomes that came back: waits up to ``wait`` seconds for the first."""
        batch = []
        try:
            batch.append(self.results.get(timeout=wait))
            while len(batch) < 1024:
                batch.append(self.results.get_nowait())
        except queuemod.Empty:
            pass
        return batch

    def _settle(self, batch):
        now = time.time()
        rows = []
        states = {}
        for runner, item, outcome in batch:
            chunk_id, op, gen, attempts, body, recorded_at = item
            runner.inflight.discard(chunk_id)
            before = runner.state
            runner.settled(outcome, now)
            if runner.state != before:
                states[runner.feed.id] = runner.state
            if outcome.kind == "wait":  # not a failure: due again shortly
                rows.append((runner.feed.id, chunk_id, gen, "later", now + 1.0, 0,
                             outcome.error))
                continue
            retry_at = now + backoff(attempts + 1, runner.feed.retry_max) \
                if outcome.kind == "retry" else 0
            rows.append((runner.feed.id, chunk_id, gen, outcome.kind, retry_at,
                         outcome.code, outcome.error))
        self.fqueue.settle(rows, now)
        for fid, state in states.items():
            self.fqueue.set_state(fid, state)


def run_process(config, older=()):
    """The delivery process's body (after the master's fork); never returns.
    ``older``: pids of the previous image's processes (during a reload)."""
    code = 0
    try:
        try:
            os.nice(NICE)
        except OSError:
            pass
        Deliverer(config, older).run()
    except BaseException:
        log.exception("feeds delivery process crashed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)
