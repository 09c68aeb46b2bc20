"""feeds.restore.RestorePool alone, with restorers that need no server: how far the
listing runs ahead, a listing that fails midway, a restore that raises, a stop.
(The restore against real nodes and moto's S3 server: test_feeds_s3.py.)"""
import threading
import time

import botocore.exceptions as boterr

from storage.feeds import restore


class FakeRawx:
    def __init__(self):
        self.shut = self.closed = False

    def shutdown(self):
        self.shut = True

    def close(self):
        self.closed = True


class FakeRestorer:
    """Restores ``chunk_id`` when ``gate`` is set; ids in ``boom`` raise."""

    def __init__(self, gate, boom=()):
        self.rawx = FakeRawx()
        self.gate = gate
        self.boom = boom

    def restore(self, chunk_id):
        if chunk_id in self.boom:
            raise ValueError("a bug")
        if not self.gate.wait(10):
            return restore.FAILED, "gate timeout"
        return restore.RESTORED, ""


def pool_of(jobs, ids, gate, boom=()):
    stopping = threading.Event()
    restorers = [FakeRestorer(gate, boom) for _ in range(jobs)]
    return restore.RestorePool(restorers, ids, stopping), restorers


def test_the_listing_runs_at_most_the_queue_ahead_of_the_workers():
    listed = []

    def ids():
        for n in range(10_000):
            listed.append(n)
            yield f"{n:032X}"

    gate = threading.Event()
    pool, _ = pool_of(4, ids(), gate)
    results = pool.results()
    first = threading.Thread(target=lambda: next(results))
    first.start()
    time.sleep(0.5)
    # 4 in the workers' hands, 8 in the queue, 1 the lister waits to put
    assert len(listed) == 4 + 8 + 1
    gate.set()
    first.join(10)
    assert sum(1 for _ in results) == 9_999 and len(listed) == 10_000


def test_a_listing_that_fails_midway_is_reported_after_what_it_listed():
    def ids():
        yield from ("0A" * 16, "0B" * 16, "0C" * 16)
        raise boterr.ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"},
                                  "ResponseMetadata": {"HTTPStatusCode": 404}}, "ListObjectsV2")

    gate = threading.Event()
    gate.set()
    pool, restorers = pool_of(2, ids(), gate)
    got = list(pool.results())
    assert sorted(cid for cid, outcome, _ in got if outcome == restore.RESTORED) == \
        ["0A" * 16, "0B" * 16, "0C" * 16]
    assert (None, restore.LISTING, "S3 NoSuchBucket: gone") in got and len(got) == 4
    assert all(one.rawx.closed for one in restorers)


def test_a_restore_that_raises_fails_its_chunk_not_the_run():
    gate = threading.Event()
    gate.set()
    pool, _ = pool_of(3, iter(["0A" * 16, "0B" * 16, "0C" * 16]), gate, boom={"0B" * 16})
    got = sorted(pool.results())
    assert got == [("0A" * 16, restore.RESTORED, ""), ("0B" * 16, restore.FAILED,
                                                        "ValueError: a bug"),
                   ("0C" * 16, restore.RESTORED, "")]


def test_stop_ends_the_threads_and_counts_the_restores_that_ended_meanwhile():
    gate = threading.Event()
    pool, restorers = pool_of(4, (f"{n:032X}" for n in range(10_000)), gate)
    pool.start()
    time.sleep(0.3)  # each worker holds a chunk, waiting on the gate
    threading.Timer(0.2, gate.set).start()
    started = time.monotonic()
    late = pool.stop(grace=5)
    assert time.monotonic() - started < 5 and pool.running == 0
    assert all(one.rawx.shut and one.rawx.closed for one in restorers)
    assert [outcome for _, outcome, _ in late] == [restore.RESTORED] * 4
    for thread in pool.threads:
        thread.join(2)
        assert not thread.is_alive()
