"""Choosing nodes for chunks: rendezvous (highest random weight) hashing.

Every node gets the score xxh64(node url + NUL + key); the chunks of a key
go to the nodes with the highest scores, in score order. Adding or removing
one node only moves the keys whose top list contained it; the choice is a
pure function of (nodes, key), so any client computes the same one.
"""
import xxhash


def normalize_url(url):
    """A node URL as compared and hashed: scheme://host:port, no slash."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def score(node, key):
    """The node's weight for the key (a 64-bit int)."""
    return xxhash.xxh64_intdigest(node.encode() + b"\0" + key.encode())


def rank(nodes, key):
    """All distinct nodes, best first for the key (ties by URL)."""
    unique = sorted({normalize_url(n) for n in nodes})
    return sorted(unique, key=lambda n: (-score(n, key), n))


def choose(nodes, key, count):
    """``count`` distinct nodes for the key; ValueError if there are fewer."""
    ranked = rank(nodes, key)
    if len(ranked) < count:
        raise ValueError(f"need {count} distinct nodes, got {len(ranked)}")
    return ranked[:count]


def metachunk_key(content_id, number):
    """The placement key of metachunk ``number`` of a content."""
    return f"{content_id}/{number}"
