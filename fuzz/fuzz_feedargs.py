"""Fuzz target: the query of a feed SEND (``storage.send.route.query_args`` and the
feed-form rules of ``storage.send.feeds``: select_feeds, parse_timeout, parse_force).

Run with atheris (``make fuzz``):  python fuzz/fuzz_feedargs.py -runs=20000
``TestOneInput`` needs nothing but storage.send, so tests import it and smoke-run it
over hypothesis inputs without atheris installed.

The input is the query string, decoded latin-1 (as the HTTP head parser hands it
over). Each rule must either answer or raise BadRequest with a one-line reason; any
other exception is a crash, and so is an answer that breaks its contract: feeds that
are not among the defined ones, or not in id order, or duplicated; a feed picked by
neither its id nor its type; a timeout that is negative, not finite, over the cap or
other than the default when none is given.
"""
import math
import sys

from storage.errors import BadRequest
from storage.feeds.config import parse_text
from storage.send import feeds as feedsend
from storage.send.route import query_args

FEEDS = parse_text('[feed.1]\ntype = "replication"\ntarget = "http://127.0.0.1:9"\n'
                   '[feed.2]\ntype = "indexing"\ntarget = "beanstalk://127.0.0.1:9"\n'
                   '[feed.7]\ntype = "s3backup"\ntarget = "s3://bucket/p"\n')
DEFAULT = 30.0


def _one_line(exc):
    reason = str(exc)
    assert reason and "\n" not in reason and "\r" not in reason, repr(reason)


def check_selection(args, chosen):
    ids = [feed.id for feed in chosen]
    assert ids == sorted(set(ids)), ids
    assert set(ids) <= {feed.id for feed in FEEDS}
    wanted_ids = {v for v in args.get("feedid", ())}
    wanted_types = {v.lower() for v in args.get("feedtype", ())}
    for feed in chosen:
        by_id = "all" in {v.lower() for v in wanted_ids} or str(feed.id) in wanted_ids \
            or any(v.isdigit() and int(v) == feed.id for v in wanted_ids if v.isascii())
        by_type = "all" in wanted_types or feed.type in wanted_types or (
            feed.kind == "index" and wanted_types & {"search", "indexing"})
        assert by_id or by_type, (feed, args)


def TestOneInput(data):
    query = bytes(data).decode("latin-1")
    args = query_args(query)
    for name, values in args.items():
        assert name == name.lower() and values, (name, values)
    try:
        check_selection(args, feedsend.select_feeds(args, FEEDS))
    except BadRequest as exc:
        _one_line(exc)
    try:
        timeout = feedsend.parse_timeout(args, DEFAULT)
        if timeout is not None:
            assert math.isfinite(timeout) and 0 <= timeout <= feedsend.TIMEOUT_MAX
        if "timeout" not in args:
            assert timeout == DEFAULT
    except BadRequest as exc:
        _one_line(exc)
    try:
        assert feedsend.parse_force(args) in (True, False)
    except BadRequest as exc:
        _one_line(exc)


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
