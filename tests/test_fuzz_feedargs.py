"""The feed SEND query rules (storage.send.feeds) over hypothesis inputs, and smoke
runs of fuzz/fuzz_feedargs.py without atheris."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzutil import load_fuzz_target
from storage.errors import BadRequest
from storage.send import feeds as feedsend
from storage.send.route import query_args

FUZZ = load_fuzz_target("fuzz_feedargs")
FEEDS = FUZZ.FEEDS

NAMES = st.sampled_from(["feedid", "FeedId", "feedtype", "timeout", "forceReprocess",
                         "force", "admin", "x"])
VALUES = st.one_of(st.sampled_from(["1", "2", "7", "3", "all", "ALL", "search",
                                    "indexing", "replication", "s3backup", "true",
                                    "false", "yes", "no", "0", "2.5", "1e3", "-1", "",
                                    "nan", "inf", "999999999"]),
                   st.text(max_size=12))
QUERIES = st.lists(st.tuples(NAMES, st.one_of(st.none(), VALUES)), max_size=8).map(
    lambda items: "&".join(n if v is None else f"{n}={v}" for n, v in items))


@settings(max_examples=400, deadline=None)
@given(QUERIES)
def test_fuzz_target_on_well_formed_queries(query):
    FUZZ.TestOneInput(query.encode("latin-1", "replace"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


@pytest.mark.parametrize("query, ids", [
    ("feedid=1", [1]),
    ("feedid=7&feedid=1", [1, 7]),
    ("feedid=all", [1, 2, 7]),
    ("feedtype=search", [2]),
    ("feedtype=INDEXING&feedid=7", [2, 7]),  # the union
    ("feedtype=replication&feedtype=s3backup", [1, 7]),
    ("feedtype=all", [1, 2, 7]),
])
def test_selection_is_the_union(query, ids):
    assert [f.id for f in feedsend.select_feeds(query_args(query), FEEDS)] == ids


@pytest.mark.parametrize("query", ["feedid=3", "feedid=0", "feedid=01x", "feedid=",
                                   "feedtype=backup", "feedtype="])
def test_selection_refusals(query):
    with pytest.raises(BadRequest):
        feedsend.select_feeds(query_args(query), FEEDS)


@pytest.mark.parametrize("query, seconds", [
    ("", 30.0), ("timeout", 30.0), ("timeout=true", 30.0), ("timeout=false", None),
    ("timeout=0", 0.0), ("timeout=2.5", 2.5), ("timeout=604800", 604800.0)])
def test_timeouts(query, seconds):
    assert feedsend.parse_timeout(query_args(query), 30.0) == seconds


@pytest.mark.parametrize("query", ["timeout=-1", "timeout=1e3", "timeout=nan",
                                   "timeout=604801", "timeout=.5", "timeout="])
def test_timeout_refusals(query):
    with pytest.raises(BadRequest):
        feedsend.parse_timeout(query_args(query), 30.0)


@pytest.mark.parametrize("query, force", [
    ("", False), ("forceReprocess", True), ("force=YES", True), ("force=no", False),
    ("forcereprocess=false&force=true", True)])
def test_force(query, force):
    assert feedsend.parse_force(query_args(query)) is force
