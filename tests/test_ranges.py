"""storage.rawx.ranges: the Range header as RAWX reads it (spec rawx.md section 4)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.rawx.ranges import UNSATISFIABLE, parse_range

FULL = None  # the whole chunk, plain 200

# (header value, chunk size) -> expected (offset, length), UNSATISFIABLE or FULL
TABLE = [
    # bytes=-N: the last min(N, S) bytes; N = 0 -> 416
    ("bytes=-1", 10, (9, 1)),
    ("bytes=-4", 10, (6, 4)),
    ("bytes=-10", 10, (0, 10)),
    ("bytes=-11", 10, (0, 10)),
    ("bytes=-99999999999999999999", 10, (0, 10)),
    ("bytes=-0", 10, UNSATISFIABLE),
    ("bytes=-000", 10, UNSATISFIABLE),
    # bytes=A-: A >= S -> 416
    ("bytes=0-", 10, (0, 10)),
    ("bytes=3-", 10, (3, 7)),
    ("bytes=9-", 10, (9, 1)),
    ("bytes=10-", 10, UNSATISFIABLE),
    ("bytes=11-", 10, UNSATISFIABLE),
    ("bytes=007-", 10, (7, 3)),
    # bytes=A-B: A > B ignored; A >= S -> 416; B past the end clipped
    ("bytes=0-0", 10, (0, 1)),
    ("bytes=2-5", 10, (2, 4)),
    ("bytes=0-9", 10, (0, 10)),
    ("bytes=5-9", 10, (5, 5)),
    ("bytes=5-10", 10, (5, 5)),
    ("bytes=5-1000", 10, (5, 5)),
    ("bytes=0-18446744073709551616", 10, (0, 10)),
    ("bytes=5-4", 10, FULL),
    ("bytes=9-0", 10, FULL),
    ("bytes=20-3", 10, FULL),  # A > B wins over A >= S
    ("bytes=10-10", 10, UNSATISFIABLE),
    ("bytes=10-20", 10, UNSATISFIABLE),
    ("bytes=12-15", 10, UNSATISFIABLE),
    # not bytes=(\d*)-(\d*): ignored
    ("bytes=-", 10, FULL),
    ("bytes=0-1,3-4", 10, FULL),
    ("bytes=0-1, 3-4", 10, FULL),
    ("bytes= 0-1", 10, FULL),
    ("bytes=0 -1", 10, FULL),
    ("bytes=0-1 ", 10, FULL),
    (" bytes=0-1", 10, FULL),
    ("bytes = 0-1", 10, FULL),
    ("bytes=--1", 10, FULL),
    ("bytes=-1-2", 10, FULL),
    ("bytes=-5-", 10, FULL),
    ("bytes=+1-2", 10, FULL),
    ("bytes=1-+2", 10, FULL),
    ("bytes=0x1-2", 10, FULL),
    ("bytes=1.5-2", 10, FULL),
    ("bytes=a-b", 10, FULL),
    ("bytes=1", 10, FULL),
    ("bytes=", 10, FULL),
    ("bytes", 10, FULL),
    ("Bytes=0-1", 10, FULL),
    ("BYTES=0-1", 10, FULL),
    ("items=0-1", 10, FULL),
    ("bytes=0-1\n", 10, FULL),
    ("bytes=\u0661-2", 10, FULL),  # non-ASCII digits are not digits here
    ("bytes=1-\u0662", 10, FULL),
    ("", 10, FULL),
    # empty chunk
    ("bytes=0-", 0, UNSATISFIABLE),
    ("bytes=0-0", 0, UNSATISFIABLE),
    ("bytes=0-10", 0, UNSATISFIABLE),
    ("bytes=-0", 0, UNSATISFIABLE),
    ("bytes=5-1", 0, FULL),
    # a suffix of an empty chunk is offset 0 length 0: the caller serves a plain 200
    ("bytes=-5", 0, (0, 0)),
    # one-byte chunk
    ("bytes=0-0", 1, (0, 1)),
    ("bytes=-1", 1, (0, 1)),
    ("bytes=1-", 1, UNSATISFIABLE),
]


@pytest.mark.parametrize("value,size,expected", TABLE)
def test_spec_table(value, size, expected):
    assert parse_range(value, size) == expected


def test_unsatisfiable_is_a_distinct_marker():
    assert UNSATISFIABLE is not None and not isinstance(UNSATISFIABLE, tuple)


sizes = st.integers(0, 1 << 40)
numbers = st.integers(0, 1 << 42)


def in_chunk(result, size):
    offset, length = result
    return 0 <= offset and 0 <= length and offset + length <= size


@settings(max_examples=200, deadline=None)
@given(sizes, numbers, numbers)
def test_first_last_properties(size, first, last):
    got = parse_range(f"bytes={first}-{last}", size)
    if first > last:
        assert got is FULL
    elif first >= size:
        assert got == UNSATISFIABLE
    else:
        assert in_chunk(got, size) and got[1] > 0
        assert got == (first, min(last, size - 1) - first + 1)


@settings(max_examples=200, deadline=None)
@given(sizes, numbers)
def test_open_and_suffix_properties(size, number):
    opened = parse_range(f"bytes={number}-", size)
    if number >= size:
        assert opened == UNSATISFIABLE
    else:
        assert opened == (number, size - number)
    suffix = parse_range(f"bytes=-{number}", size)
    if number == 0:
        assert suffix == UNSATISFIABLE
    else:
        assert in_chunk(suffix, size)
        assert suffix[0] + suffix[1] == size and suffix[1] == min(number, size)


# an explicit alphabet: the range grammar's own characters and a few intruders (also
# spares hypothesis building its whole-Unicode table on a fresh machine)
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="bytes=-0123456789, +\t\u0661x", max_size=20), sizes)
def test_anything_else_never_raises(value, size):
    got = parse_range(value, size)
    assert got is FULL or got == UNSATISFIABLE or in_chunk(got, size)
