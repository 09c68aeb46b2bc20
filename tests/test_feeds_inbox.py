"""The feeds inbox (storage.feeds.inbox): records a worker appends before its 201,
ingested into the queue by the delivery process; on real files, a real SQLite queue
and real processes (a writer that dies, one that lives)."""
import multiprocessing
import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzutil import load_fuzz_target
from storage.feeds import inbox
from storage.feeds.queue import DELETED, DONE, NEW, FeedQueue

FUZZ = load_fuzz_target("fuzz_inbox")


def cid(n):
    return "%064X" % n


@pytest.fixture
def fq(tmp_path):
    queue = FeedQueue(str(tmp_path), checkpoints=True)
    queue.prepare_feeds([1, 2, 3])
    yield queue
    queue.close()


def rows(fq, chunk):
    return fq.status(chunk)


# ---- the record format ----------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


RECORDS = st.builds(
    lambda ts, op, n, parts, event: (ts, op, cid(n), parts, event),
    st.integers(0, 2 ** 64 - 1), st.sampled_from([NEW, DELETED]), st.integers(0, 2 ** 200),
    st.lists(st.tuples(st.integers(1, 2 ** 32 - 1), st.sampled_from([0, 1, 2])),
             max_size=5),
    st.binary(max_size=200))


@settings(max_examples=200, deadline=None)
@given(st.lists(RECORDS, max_size=6), st.integers(0, 400))
def test_records_round_trip_and_a_cut_is_incomplete_not_corrupt(records, cut):
    data = b"".join(inbox.encode(*r) for r in records)
    got, used = inbox.decode(data)
    assert used == len(data)
    assert [(r.ts_ns, r.op, r.chunk_id, [tuple(p) for p in r.parts], r.event)
            for r in got] == [(ts, op, c, [tuple(p) for p in parts], ev)
                              for ts, op, c, parts, ev in records]
    head, used = inbox.decode(data[:cut])  # a write in progress: what is whole
    assert used <= min(cut, len(data)) and len(head) <= len(records)


def test_damage_is_said_and_the_records_before_it_kept():
    one = inbox.encode(5, NEW, cid(1), [(1, 0)])
    two = bytearray(inbox.encode(6, NEW, cid(2), [(1, 0)]))
    two[-1] ^= 0xFF  # the checksum no longer matches
    with pytest.raises(inbox.CorruptRecord, match="bad checksum at byte") as err:
        inbox.decode(one + bytes(two))
    assert [r.chunk_id for r in err.value.records] == [cid(1)]
    assert err.value.consumed == len(one)
    with pytest.raises(inbox.CorruptRecord, match="no record mark"):
        inbox.decode(b"XX" + one[2:])


# ---- ingesting --------------------------------------------------------------------------
def _writer_then_die(docroot, records, conn):
    writer = inbox.InboxWriter(docroot)
    for record in records:
        writer.append(record)
    os.write(writer.fd, inbox.encode(9, NEW, cid(99), [(1, 0)])[:11])  # torn at death
    conn.send(writer.path)
    os._exit(0)


def test_a_dead_writers_file_is_ingested_then_removed(tmp_path, fq):
    parent, child = multiprocessing.Pipe()
    records = [inbox.encode(1_000_000_000 + n, NEW, cid(n), [(1, 0), (2, 1)], b"ev")
               for n in range(3)]
    proc = multiprocessing.get_context("fork").Process(
        target=_writer_then_die, args=(str(tmp_path), records, child))
    proc.start()
    path = parent.recv()
    proc.join(10)
    assert inbox.Ingester(str(tmp_path), fq, [1, 2]).run() == 3
    assert not os.path.exists(path) and fq.inbox_offsets() == {}
    assert fq.counts()[1][0] == 3 and fq.counts()[2][0] == 3
    due = {row[0]: row for row in fq.due(2, 10, now=2e9)}
    assert due[cid(0)][4] == b"ev"  # the event goes with the index feed's row
    assert fq.due(1, 10, now=2e9)[0][4] is None
    assert cid(99) not in due  # the torn record was never acknowledged


def test_a_live_writers_file_is_read_as_it_grows(tmp_path, fq):
    writer = inbox.InboxWriter(str(tmp_path))
    ingester = inbox.Ingester(str(tmp_path), fq, [1])
    writer.append(inbox.encode(10, NEW, cid(1), [(1, 0)]))
    whole = inbox.encode(11, NEW, cid(2), [(1, 0)])
    os.write(writer.fd, whole[:7])  # a record being written
    assert ingester.run() == 1
    name = os.path.basename(writer.path)
    assert fq.inbox_offsets() == {name: len(inbox.encode(10, NEW, cid(1), [(1, 0)]))}
    os.write(writer.fd, whole[7:])
    assert ingester.run() == 1 and ingester.run() == 0
    assert os.path.exists(writer.path)  # its writer lives
    writer.close()
    assert ingester.run() == 0 and not os.path.exists(writer.path)
    assert set(rows(fq, cid(1))) == {1} and set(rows(fq, cid(2))) == {1}


def test_records_apply_in_time_order_across_files_and_never_over_newer_rows(tmp_path, fq):
    a, b = inbox.InboxWriter(str(tmp_path)), inbox.InboxWriter(str(tmp_path))
    # chunk 1: PUT on one worker (t=1 s), DELETE on the other (t=2 s), for a feed
    # with deletes; the files are read in name order, the records in time order
    b.append(inbox.encode(2_000_000_000, DELETED, cid(1), [(1, 0)]))
    a.append(inbox.encode(1_000_000_000, NEW, cid(1), [(1, 0)]))
    # chunk 2: delivered at t=5 s; an older record (t=3 s) must not make it owed again
    fq.record([(cid(2), 1, NEW, None)], now=4.0)
    fq.settle([(1, cid(2), 0, "done", 0, 0, None)], now=5.0)
    a.append(inbox.encode(3_000_000_000, NEW, cid(2), [(1, 0)]))
    # chunk 3: delivered, then deleted on a worker: the feed without deletes forgets it
    fq.record([(cid(3), 2, NEW, None)], now=4.0)
    fq.settle([(2, cid(3), 0, "done", 0, 0, None)], now=5.0)
    b.append(inbox.encode(6_000_000_000, DELETED, cid(3), [(2, inbox.FORGET)]))
    # feed 7 is not defined any more: its part is dropped
    a.append(inbox.encode(7_000_000_000, NEW, cid(4), [(7, 0), (1, 0)]))
    inbox.Ingester(str(tmp_path), fq, [1, 2]).run()
    assert fq.due(1, 10, now=1e10)[0][:2] == (cid(1), DELETED)
    assert rows(fq, cid(2))[1][0] == DONE
    assert rows(fq, cid(3)) == {}
    assert set(rows(fq, cid(4))) == {1}
    a.close()
    b.close()


def test_backlog_counts_what_is_not_ingested_yet(tmp_path, fq):
    writer = inbox.InboxWriter(str(tmp_path))
    for n in range(4):
        writer.append(inbox.encode(n, NEW, cid(n), [(1, 0), (2, inbox.FORGET)]))
    assert inbox.backlog(str(tmp_path), fq.inbox_offsets()) == {1: 4}
    inbox.Ingester(str(tmp_path), fq, [1, 2]).run()
    assert inbox.backlog(str(tmp_path), fq.inbox_offsets()) == {}
    writer.close()


def test_a_write_that_fails_is_an_error_not_a_lost_record(tmp_path):
    writer = inbox.InboxWriter(str(tmp_path))
    os.close(writer.fd)
    writer.fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(inbox.InboxError, match="No space left"):
        writer.append(inbox.encode(1, NEW, cid(1), [(1, 0)]))
    writer.close()


def test_backlog_counts_every_record_across_read_pieces(tmp_path, fq):
    writer = inbox.InboxWriter(str(tmp_path))
    for n in range(300):
        event = b"e" * (n % 7) * 40
        writer.append(inbox.encode(n, NEW, cid(n), [(1, 1), (3, 0)] if n % 2 else [(1, 0)],
                                   event))
    counted = inbox.backlog(str(tmp_path), {}, piece=97)  # records straddle the pieces
    assert counted == {1: 300, 3: 150}
    writer.close()
