"""storage.ec.placement: rendezvous hashing with xxh64."""
import collections

import pytest
import xxhash

from storage.ec import placement

NODES = [f"http://127.0.0.1:{6000 + i}" for i in range(12)]


def test_score_is_xxh64_of_node_and_key():
    assert placement.score("http://a:1", "k") == xxhash.xxh64(b"http://a:1\0k").intdigest()


def test_deterministic_and_order_free():
    key = "0123456789ABCDEF0123456789ABCDEF/0"
    first = placement.choose(NODES, key, 9)
    assert placement.choose(list(reversed(NODES)), key, 9) == first
    assert placement.choose(NODES + NODES[:3], key, 9) == first     # duplicates ignored
    assert len(set(first)) == 9 and set(first) <= set(NODES)
    # The order is the score order.
    scores = [placement.score(n, key) for n in first]
    assert scores == sorted(scores, reverse=True)


def test_normalized_urls():
    assert placement.normalize_url("127.0.0.1:6000/") == "http://127.0.0.1:6000"
    assert placement.normalize_url(" http://127.0.0.1:6000 ") == "http://127.0.0.1:6000"
    bare = [n[len("http://"):] for n in NODES]
    assert placement.choose(bare, "k", 9) == placement.choose(NODES, "k", 9)


def test_too_few_nodes():
    with pytest.raises(ValueError, match="need 9 distinct nodes, got 8"):
        placement.choose(NODES[:8] + NODES[:2], "k", 9)


def test_spread():
    """Over many keys each of 12 nodes is picked about 9/12 of the time, and
    first place (chunk 0) is spread about evenly."""
    picks = collections.Counter()
    firsts = collections.Counter()
    keys = 3000
    for n in range(keys):
        chosen = placement.choose(NODES, placement.metachunk_key("C%d" % n, 0), 9)
        picks.update(chosen)
        firsts[chosen[0]] += 1
    for node in NODES:
        assert abs(picks[node] - keys * 9 / 12) < keys * 0.05
        assert abs(firsts[node] - keys / 12) < keys / 12 * 0.35


def test_minimal_disruption():
    """Removing a node moves only the keys that had it, and then only its slot."""
    moved = 0
    for n in range(300):
        key = placement.metachunk_key("C%d" % n, 1)
        before = placement.choose(NODES, key, 9)
        after = placement.choose(NODES[1:], key, 9)
        if NODES[0] in before:
            moved += 1
            assert [x for x in before if x != NODES[0]] == after[:8]
        else:
            assert after == before
    assert moved > 0


def test_metachunks_spread_differently():
    a = placement.choose(NODES, placement.metachunk_key("C", 0), 9)
    differs = any(placement.choose(NODES, placement.metachunk_key("C", n), 9) != a
                  for n in range(1, 20))
    assert differs
