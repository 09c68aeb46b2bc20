"""storage.rsmc.parser: whole, byte by byte and split at random points; every refusal
(400, 413, 501); hypothesis round trips; the fuzz target smoke-run."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzutil import load_fuzz_target
from storage.rsmc.parser import Request, RequestParser, RsmcError



def feed_all(data, pieces="whole", seed=0, **limits):
    parser = RequestParser(**limits)
    if pieces == "whole":
        parts = [data]
    elif pieces == "bytes":
        parts = [data[i:i + 1] for i in range(len(data))]
    else:
        rng = random.Random(seed)
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(5))
        parts = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    events = []
    for part in parts:
        events += parser.feed(part)
        if parser.error is not None:
            break  # the connection answers and closes
    return parser, events


SPLITS = ["whole", "bytes", "random"]


@pytest.mark.parametrize("pieces", SPLITS)
def test_every_command(pieces):
    data = (b"RECEIVE / RSMP/1.0\r\nAuthorization: Basic YTpi\r\n\r\n"
            b"http://h:1/A B\r\nhttp://h:1/C\r\n\r\n"
            b"SEND /base RSMP/1.0\n\nx http://h/x\n\n"
            b"ERASE / RSMP/1.0\r\n\r\n\r\n"
            b"INFO http://h:1/ABC RSMP/1.0\r\n\r\n"
            b"log RSMP/1.0\r\n\r\n"
            b"GET server.log.2 RSMP/1.0\r\n\r\n")
    parser, events = feed_all(data, pieces)
    assert [(e.command, e.argument) for e in events] == [
        ("RECEIVE", "/"), ("SEND", "/base"), ("ERASE", "/"), ("INFO", "http://h:1/ABC"),
        ("LOG", ""), ("GET", "server.log.2")]
    assert events[0].items == ["http://h:1/A B", "http://h:1/C"]
    assert events[0].headers == {"authorization": "Basic YTpi"}
    assert events[1].items == ["x http://h/x"] and events[2].items == []
    assert parser.idle and parser.error is None


def test_a_partial_request_waits():
    parser = RequestParser()
    assert parser.feed(b"ERASE / RSMP/1.0\r\n\r\nABC\r\n") == []
    assert not parser.idle
    [request] = parser.feed(b"\r\n")
    assert request.items == ["ABC"] and parser.idle


@pytest.mark.parametrize("data,code,reason", [
    (b"ERASE / HTTP/1.1\r\n\r\n", 400, "must end with RSMP/1.0"),
    (b"ERASE RSMP/1.0\r\n\r\n", 400, "takes one argument"),
    (b"ERASE a b RSMP/1.0\r\n\r\n", 400, "takes one argument"),
    (b"LOG x RSMP/1.0\r\n\r\n", 400, "takes no argument"),
    (b"DELETE x RSMP/1.0\r\n\r\n", 501, "unknown command DELETE"),
    (b"1NFO x RSMP/1.0\r\n\r\n", 400, "malformed command"),
    (b"INFO x RSMP/1.0\r\nno colon here\r\n\r\n", 400, "malformed header"),
    (b"INFO x RSMP/1.0\r\nA: b\x00\r\n\r\n", 400, "control character"),
    (b"   \r\n", 400, "empty command line"),
])
def test_refusals(data, code, reason):
    parser, events = feed_all(data)
    assert isinstance(events[-1], RsmcError)
    assert events[-1].code == code and reason in events[-1].reason
    assert parser.feed(b"LOG RSMP/1.0\r\n\r\n") == [parser.error]  # failed for good


def test_requests_before_an_error_are_kept():
    _, events = feed_all(b"LOG RSMP/1.0\r\n\r\nBAD x RSMP/1.0\r\n\r\nLOG RSMP/1.0\r\n\r\n")
    assert isinstance(events[0], Request) and events[1].code == 501 and len(events) == 2


@pytest.mark.parametrize("pieces", SPLITS)
def test_limits_are_413(pieces):
    head = b"INFO x RSMP/1.0\r\n" + b"X: " + b"a" * 300 + b"\r\n\r\n"
    _, events = feed_all(head, pieces, max_bytes=256)
    assert events[-1].code == 413 and "request head" in events[-1].reason
    listed = b"ERASE / RSMP/1.0\r\n\r\n" + b"ABCDEF\r\n" * 40 + b"\r\n"
    _, events = feed_all(listed, pieces, max_bytes=256)
    assert events[-1].code == 413 and "list over" in events[-1].reason
    _, events = feed_all(listed, pieces, max_items=10)
    assert events[-1].code == 413 and "more than 10 objects" in events[-1].reason
    # an unending line is refused as soon as it passes the limit, not at its end
    parser = RequestParser(max_bytes=256)
    assert parser.feed(b"INFO " + b"x" * 300)[-1].code == 413


def test_exactly_at_the_limits_is_fine():
    listed = b"ERASE / RSMP/1.0\r\n\r\n" + b"AB\r\n" * 10 + b"\r\n"
    _, events = feed_all(listed, max_items=10)
    assert len(events[0].items) == 10


token = st.text("ABCDEFabcdef0123456789:/._-?=&%", min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["RECEIVE", "SEND", "ERASE", "INFO", "GET"]), token,
       st.lists(st.tuples(st.text("abcdefXYZ-", min_size=1, max_size=10),
                          st.text("abc 123:/", max_size=20).map(str.strip)), max_size=4),
       st.lists(st.lists(token, min_size=1, max_size=2).map(" ".join), max_size=20),
       st.sampled_from(["\r\n", "\n"]), st.integers(0, 2**32))
def test_round_trip(command, argument, fields, items, eol, seed):
    lines = [f"{command} {argument} RSMP/1.0"] + [f"{n}: {v}" for n, v in fields] + [""]
    if command in ("RECEIVE", "SEND", "ERASE"):
        lines += items + [""]
    data = eol.join(lines).encode() + eol.encode()
    for pieces in SPLITS:
        _, events = feed_all(data, pieces, seed)
        [request] = events
        assert (request.command, request.argument) == (command, argument)
        assert request.fields == [(n.lower(), v) for n, v in fields]
        if command in ("RECEIVE", "SEND", "ERASE"):
            assert request.items == items


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_requests_or_one_error(data):
    for pieces in SPLITS:
        parser, events = feed_all(data, pieces)
        for event in events[:-1]:
            assert isinstance(event, Request)


FUZZ = load_fuzz_target("fuzz_rsmc")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)
