"""``storage-node feeds``: a node's feeds, from its configuration file.

    storage-node feeds status  -f CONF [--json]
    storage-node feeds retry   -f CONF --feed ID
    storage-node feeds restore -f CONF --feed ID [--to URL] [--jobs N] [CHUNKID...]

CONF is the node's oio-rawx configuration: its ``docroot`` holds the feeds queue
(``.storage-node/feeds.db``) and its ``feeds_config`` the feed definitions.

- ``status``: per feed its id, type, target, pending, done and errors counters,
  the age of its oldest pending chunk, its state and its last error; ``--json``
  prints the same as a JSON list. Read from the queue, so it works whether the node
  runs or not (the state is the one the delivery process wrote last).
- ``retry``: the feed's pending chunks become due now, its failed ones pending again,
  and the running delivery process forgets the feed's backoff within a turn of its
  loop (a request it reads from the queue).
- ``restore``: every chunk of an s3backup feed's bucket (under its prefix), or the
  named ones, PUT back on the node of CONF (its ``listen`` address) or ``--to``; a
  chunk the node has is skipped. One line per chunk that is not restored, a progress
  line on stderr (on a terminal, or with --progress), a summary. ``--jobs N`` chunks
  at once (default 4), each thread with its own connection to the node. Ctrl-C
  stops it: the chunks being copied are dropped (the node discards a PUT cut short),
  the summary says what was done, exit 130.

Exit status: 0 success (restore: every chunk restored or skipped), 1 otherwise, 2 for
bad arguments or configuration, 130 for a restore stopped by Ctrl-C.
"""
import argparse
import json
import os
import signal
import sys
import time

from storage import config as configmod
from storage.cli.common import Counter
from storage.rawx.meta import valid_chunk_id

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped


class Usage(Exception):
    """Bad arguments or configuration: exit 2 with this message."""


def _fail(message, status=EXIT_USAGE):
    print(f"storage-node feeds: {message}", file=sys.stderr)
    return status


def _config(path):
    try:
        config = configmod.load(path, {})
    except configmod.ConfigError as exc:
        raise Usage(f"configuration error: {exc}") from None
    if not config.feeds:
        raise Usage(f"{path} defines no feeds (feeds_config)")
    return config


def _feed(config, fid):
    for feed in config.feeds:
        if feed.id == fid:
            return feed
    known = ", ".join(str(f.id) for f in config.feeds)
    raise Usage(f"no feed {fid} in {config.feeds_config} (feeds: {known})")


def _queue(config, create=False):
    """The node's feeds queue, or None when it was never created (status)."""
    from storage.feeds.queue import FeedQueue, db_path
    if not create and not os.path.exists(db_path(config.docroot)):
        return None
    try:
        return FeedQueue(config.docroot)
    except Exception as exc:  # sqlite3.Error, OSError
        raise Usage(f"cannot open the feeds queue in {config.docroot}: {exc}") from None


# ---- status -----------------------------------------------------------------------------
def feed_rows(config, now=None):
    """[dict] of every feed: what ``status`` prints."""
    now = time.time() if now is None else now
    queue = _queue(config)
    rows = []
    try:
        counts = queue.counts() if queue else {}
        backfills = queue.backfills() if queue else {}
        for feed in config.feeds:
            pending, done, errors, state = counts.get(feed.id, (0, 0, 0, "ok"))
            oldest = queue.oldest_pending(feed.id) if queue else None
            last = queue.last_error(feed.id) if queue else None
            rows.append({
                "id": feed.id, "type": feed.type, "target": feed.target,
                "pending": pending, "done": done, "errors": errors,
                "oldest_pending_age": None if oldest is None else round(max(0.0, now - oldest), 1),
                "state": state,
                "last_error": last[0] if last else None,
                "last_error_at": last[1] if last else None,
                "backfill": _backfill(backfills.get(feed.id), now),
            })
    finally:
        if queue:
            queue.close()
    return rows


def _backfill(mark, now):
    """What a feed's unfinished backfill has done: None when it has none."""
    if mark is None:
        return None
    cursor, started, queued = mark
    digits = (cursor or "").replace("/", "")
    try:
        done = (int(digits, 16) + 1) / 16 ** len(digits) if digits else 0.0
    except ValueError:
        done = 0.0
    return {"directory": cursor, "fraction": round(done, 4), "queued": queued,
            "running_for": round(max(0.0, now - started), 1)}


def _age(seconds):
    """12s, 3m05s, 2h07m, 4d03h."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def cmd_status(args):
    try:
        rows = feed_rows(_config(args.config))
    except Usage as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    head = ("ID", "TYPE", "TARGET", "PENDING", "DONE", "ERRORS", "OLDEST", "STATE",
            "LAST ERROR")
    table = [head] + [(str(r["id"]), r["type"], r["target"], str(r["pending"]),
                       str(r["done"]), str(r["errors"]), _age(r["oldest_pending_age"]),
                       r["state"], (r["last_error"] or "-")[:100]) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head) - 1)]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])
    for r in rows:
        fill = r["backfill"]
        if fill is not None:
            print(f"feed {r['id']}: backfill of the older chunks {fill['fraction']:.0%} done "
                  f"(hash directory {fill['directory'] or '-'}), {fill['queued']} queued, "
                  f"running for {_age(fill['running_for'])}")
    return EXIT_OK


# ---- retry ------------------------------------------------------------------------------
def cmd_retry(args):
    from storage.feeds.queue import QueueError
    try:
        config = _config(args.config)
        feed = _feed(config, args.feed)
        queue = _queue(config, create=True)
    except Usage as exc:
        return _fail(str(exc))
    try:
        due, requeued = queue.request_retry(feed.id)
    except QueueError as exc:
        return _fail(str(exc), EXIT_FAILED)
    finally:
        queue.close()
    print(f"feed {feed.id}: {due} pending chunks due now, {requeued} failed chunks "
          "pending again; the delivery process drops its backoff")
    return EXIT_OK


# ---- restore ----------------------------------------------------------------------------
def cmd_restore(args):
    try:
        config = _config(args.config)
        feed = _feed(config, args.feed)
        if feed.kind != "s3backup":
            raise Usage(f"feed {feed.id} is a {feed.type} feed: restore reads s3backup "
                        "feeds")
        for item in args.chunks:
            if not valid_chunk_id(item):
                raise Usage(f"not a chunk id (24 to 64 hex digits): {item!r}")
        from storage.feeds import restore, s3
        from storage.rawxclient import RawxClient
        jobs = args.jobs or restore.DEFAULT_JOBS
        url = args.to or f"http://{config.listen}"
        try:
            rawxes = [RawxClient(url, timeout=args.timeout) for _ in range(jobs)]
        except ValueError as exc:
            raise Usage(str(exc)) from None
        try:
            # the workers and the lister share it: a pooled connection each
            client = s3.make_client(feed.endpoint, args.timeout, attempts=3,
                                    pool=jobs + 1)
        except ImportError:
            raise Usage("restore needs boto3, which is not installed") from None
    except Usage as exc:
        return _fail(str(exc))
    import threading
    stopping = threading.Event()
    named = [c.upper() for c in args.chunks]
    ids = named or restore.chunk_ids(client, feed.bucket, feed.key_prefix)
    pool = restore.RestorePool([restore.Restorer(client, feed, rawx, stopping)
                                for rawx in rawxes], ids, stopping)
    counts = {restore.RESTORED: 0, restore.SKIPPED: 0, restore.FAILED: 0}
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    counter = Counter(len(named) if named else None, sys.stderr, "restored") \
        if progress else None

    def note(chunk_id, outcome, reason):
        if counter is not None and outcome in (restore.FAILED, restore.LISTING):
            counter.clear()
        if outcome == restore.LISTING:
            print(f"storage-node feeds: listing s3://{feed.bucket}/{feed.key_prefix}: "
                  f"{reason}", file=sys.stderr, flush=True)
            counts[restore.FAILED] += 1
            return
        counts[outcome] += 1
        if outcome == restore.FAILED:
            print(f"{chunk_id} {reason}", flush=True)
        if counter is not None:
            counter.add(failed=outcome == restore.FAILED)

    interrupted = False
    try:
        for chunk_id, outcome, reason in pool.results():
            note(chunk_id, outcome, reason)
    except KeyboardInterrupt:
        interrupted = True
        # a second Ctrl-C while the threads stop (5 s at most) would be a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for item in pool.stop():
            note(*item)
    finally:
        client.close()
    if counter is not None and (counter.total is None or interrupted):
        sys.stderr.write("\n")
    print(f"feed {feed.id}: {counts[restore.RESTORED]} restored, "
          f"{counts[restore.SKIPPED]} skipped, {counts[restore.FAILED]} failed"
          + (" (interrupted: the other chunks were not tried)" if interrupted else ""),
          file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if not counts[restore.FAILED] else EXIT_FAILED


def _jobs(text):
    from storage.feeds.restore import MAX_JOBS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..{MAX_JOBS}: {text!r}")
    return value


def add_subparser(subparsers):
    feeds = subparsers.add_parser(
        "feeds", help="a node's feeds: status, retry, restore",
        description="Look at and act on a node's feeds (its feeds_config), from its "
                    "configuration file.")
    sub = feeds.add_subparsers(dest="feeds_command", required=True)

    def conf(parser):
        parser.add_argument("-f", "--config", required=True, metavar="CONF",
                            help="the node's oio-rawx configuration file")

    status = sub.add_parser("status", help="pending, done, errors and state per feed")
    conf(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    retry = sub.add_parser("retry", help="deliver a feed's chunks again now, failed "
                           "ones included")
    conf(retry)
    retry.add_argument("--feed", required=True, type=int, metavar="ID")
    retry.set_defaults(func=cmd_retry)

    rest = sub.add_parser("restore", help="put chunks of an s3backup feed back on a node",
                          description="PUT every chunk of an s3backup feed's bucket, or "
                          "the named ones, on a node. Exit 0 only if every chunk was "
                          "restored or already there.")
    conf(rest)
    rest.add_argument("--feed", required=True, type=int, metavar="ID")
    rest.add_argument("--to", metavar="URL",
                      help="the node to restore to, http://host:port (default: the "
                           "listen address of CONF)")
    rest.add_argument("chunks", nargs="*", metavar="CHUNKID",
                      help="only these chunks (default: every chunk of the feed)")
    rest.add_argument("--timeout", type=float, default=60.0,
                      help="seconds a request may take (default 60)")
    rest.add_argument("--jobs", type=_jobs, metavar="N",
                      help="chunks restored at once, each with its own connection to "
                           "the node, 1..64 (default 4)")
    rest.add_argument("--progress", action="store_true", default=None,
                      help="a progress line on stderr even when it is not a terminal")
    rest.set_defaults(func=cmd_restore)
