"""The feeds' durable queue (storage.feeds.queue) on a real SQLite file: recording,
taking due rows, settling outcomes, the per-feed counters the triggers keep, and
several connections (processes) at once."""
import multiprocessing
import os

import pytest

from storage.feeds.queue import DELETED, DONE, FAILED, NEW, PENDING, FeedQueue, db_path


def cid(n):
    return "%064X" % n


@pytest.fixture
def fq(tmp_path):
    queue = FeedQueue(str(tmp_path), checkpoints=True)
    yield queue
    queue.close()


def pending(fq, feed):
    return fq.counts().get(feed, (0, 0, 0, "ok"))[0]


def test_lives_hidden_on_the_volume_in_wal_mode(tmp_path, fq):
    assert fq.path == db_path(str(tmp_path)) == str(tmp_path / ".storage-node" / "feeds.db")
    assert fq.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    from storage.repo import FsChunkRepo
    repo = FsChunkRepo(str(tmp_path), 3, 1)
    assert repo.list_chunks("", 1000) == ([], False, "")
    repo0 = FsChunkRepo(str(tmp_path), 3, 0)  # the docroot is the only leaf
    assert repo0.list_chunks("", 1000) == ([], False, "")


def test_record_due_settle_and_counts(fq):
    fq.prepare_feeds([1, 2])
    fq.record([(cid(1), 1, NEW, None), (cid(1), 2, NEW, b"{}")], now=100.0)
    fq.record([(cid(2), 1, NEW, None)], now=101.0)
    assert (pending(fq, 1), pending(fq, 2)) == (2, 1)
    rows = fq.due(1, 10, now=200.0)
    assert [r[0] for r in rows] == [cid(1), cid(2)]  # oldest first
    assert rows[0][1:] == (NEW, 0, 0, None, 100.0)
    assert fq.due(1, 10, now=50.0) == []  # not due yet
    fq.settle([(1, cid(1), 0, "done", 0, 0, None),
               (1, cid(2), 0, "retry", 300.0, 502, "refused"),
               (2, cid(1), 0, "failed", 0, 412, "corrupt")], now=250.0)
    assert fq.counts() == {1: (1, 1, 1, "ok"), 2: (0, 0, 1, "ok")}
    assert fq.due(1, 10, now=299.0) == [] and len(fq.due(1, 10, now=300.0)) == 1
    assert fq.status(cid(1)) == {1: (DONE, 0, 250.0), 2: (FAILED, 412, 250.0)}
    assert fq.status(cid(2)) == {1: (PENDING, 0, 101.0)}  # a pending row: recorded at
    row = fq.db.execute("SELECT attempts, last_error FROM queue WHERE chunk_id = ? AND "
                        "feed = 1", (cid(2),)).fetchone()
    assert row == (1, "refused")


def test_a_row_recorded_again_is_owed_again(fq):
    fq.prepare_feeds([1])
    fq.record([(cid(1), 1, NEW, None)], now=1.0)
    (chunk, op, gen, *_), = fq.due(1, 1, now=2.0)
    fq.record([(cid(1), 1, DELETED, None)], now=3.0)  # deleted while in flight
    assert pending(fq, 1) == 1
    fq.settle([(1, chunk, gen, "done", 0, 0, None)], now=4.0)  # the old gen: ignored
    assert pending(fq, 1) == 1 and fq.counts()[1][1] == 0
    (chunk, op, gen2, *_), = fq.due(1, 1, now=5.0)
    assert (op, gen2) == (DELETED, gen + 1)
    fq.settle([(1, chunk, gen2, "drop", 0, 0, None)], now=6.0)  # a delivered delete
    assert fq.status(cid(1)) == {} and fq.counts()[1][:2] == (0, 1)
    fq.record([(cid(1), 1, NEW, None)], now=7.0)  # stored again: owed again
    fq.settle([(1, cid(1), 0, "done", 0, 0, None)], now=8.0)
    assert fq.counts()[1][:2] == (0, 2)
    fq.record([], forget_done=[(cid(1), 1)])
    assert fq.status(cid(1)) == {}


def test_later_is_not_an_error(fq):
    fq.prepare_feeds([1])
    fq.record([(cid(1), 1, DELETED, None)], now=1.0)
    fq.settle([(1, cid(1), 0, "later", 9.0, 0, None)], now=2.0)
    assert fq.counts()[1] == (1, 0, 0, "ok") and fq.due(1, 1, now=8.0) == []


def test_prepare_drops_feeds_that_went_away_and_recounts(fq):
    fq.record([(cid(n), f, NEW, None) for n in range(3) for f in (1, 2)])
    fq.db.execute("UPDATE counts SET pending = 99")  # drift
    assert fq.prepare_feeds([2, 5]) == {1: 3}
    assert fq.counts() == {2: (3, 0, 0, "ok"), 5: (0, 0, 0, "ok")}
    fq.set_state(2, "blocked")
    assert fq.counts()[2][3] == "blocked"


def _writer(docroot, start, count):
    queue = FeedQueue(docroot)
    for n in range(start, start + count):
        queue.record([(cid(n), 1, NEW, None), (cid(n), 2, NEW, None)])
    queue.close()


def test_several_processes_write_at_once(tmp_path, fq):
    fq.prepare_feeds([1, 2])
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i * 1000, 300))
             for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert fq.counts() == {1: (1200, 0, 0, "ok"), 2: (1200, 0, 0, "ok")}
    fq.checkpoint()
    assert os.path.exists(fq.path + "-wal")


def test_prepare_with_no_feed_left_drops_every_row(fq):
    fq.record([(cid(1), 1, NEW, None), (cid(1), 2, NEW, None)])
    assert fq.prepare_feeds([]) == {1: 1, 2: 1}
    assert fq.counts() == {} and fq.status(cid(1)) == {}


def test_backfill_marks_cursor_and_never_overwrites_a_recorded_row(fq):
    fq.record([(cid(1), 1, DELETED, None)])  # a request's row: it wins
    assert fq.new_feeds([1, 2]) == [2]
    fq.prepare_feeds([1, 2])
    assert fq.new_feeds([1, 2]) == []
    fq.start_backfill([2, 1])
    assert set(fq.backfills()) == {1, 2} and fq.backfills()[1][0] is None
    assert fq.backfill_step(1, [cid(1), cid(2), cid(3)], "00A") == 2
    assert fq.backfills()[1][0] == "00A" and fq.backfills()[1][2] == 2
    assert fq.due(1, 10)[0][:2] == (cid(1), DELETED)  # not turned into a NEW
    assert fq.counts()[1][0] == 3
    assert fq.backfill_step(1, [cid(3)], "00B") == 0  # queued already
    fq.backfill_step(1, [], None, finished=True)
    assert set(fq.backfills()) == {2}
    fq.prepare_feeds([1])  # feed 2 goes away: so does its backfill
    assert fq.backfills() == {}


def test_a_truncating_checkpoint_empties_the_wal_the_workers_fill(tmp_path):
    worker = FeedQueue(str(tmp_path))  # as a worker: never checkpoints itself
    delivery = FeedQueue(str(tmp_path), checkpoints=True)
    for n in range(500):
        worker.record([(cid(n), 1, NEW, b"e" * 200), (cid(n), 2, NEW, None)])
    assert worker.wal_size() > 500 * 4096  # a page or more per commit
    delivery.checkpoint(truncate=True)
    assert worker.wal_size() == 0
    worker.record([(cid(9999), 1, NEW, None)])  # and it goes on from an empty WAL
    assert delivery.counts()[1][0] == 501 and delivery.counts()[2][0] == 500
    worker.close()
    delivery.close()


def test_oldest_pending_last_error_and_retry(fq):
    fq.prepare_feeds([1, 2])
    fq.record([(cid(n), 1, NEW, None) for n in range(4)], now=10.0)
    fq.record([(cid(9), 1, NEW, None)], now=20.0)
    assert fq.oldest_pending(1) == 10.0 and fq.oldest_pending(2) is None
    assert fq.last_error(1) is None
    fq.settle([(1, cid(0), 0, "done", 0, 0, None),
               (1, cid(1), 0, "retry", 500.0, 503, "S3 NoSuchBucket"),
               (1, cid(2), 0, "failed", 0, 412, "corrupt local chunk")], now=30.0)
    assert fq.last_error(1) in (("S3 NoSuchBucket", 30.0), ("corrupt local chunk", 30.0))
    fq.settle([(1, cid(3), 0, "retry", 600.0, 503, "refused")], now=40.0)
    assert fq.last_error(1) == ("refused", 40.0)
    # a failed attempt leaves a pending row's recorded time: it is still the oldest
    assert fq.oldest_pending(1) == 10.0
    assert fq.counts()[1][:3] == (3, 1, 3)
    assert [r[0] for r in fq.due(1, 10, now=50.0)] == [cid(9)]
    assert fq.take_retry_requests() == []
    assert fq.request_retry(1, now=50.0) == (2, 1)  # two backed-off rows, one failed
    assert fq.counts()[1][0] == 4 and fq.status(cid(2))[1] == (PENDING, 0, 50.0)
    assert sorted(r[0] for r in fq.due(1, 10, now=50.0)) == [cid(1), cid(2), cid(3), cid(9)]
    assert fq.take_retry_requests() == [1] and fq.take_retry_requests() == []
    assert fq.request_retry(2, now=60.0) == (0, 0)
    assert fq.prepare_feeds([1]) == {} and fq.take_retry_requests() == []
    assert fq.last_error(1) == ("refused", 40.0) and fq.last_error(2) is None
