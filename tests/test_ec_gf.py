"""storage.ec.gf: field tables, generator matrix derivation, inversion."""
import itertools
import json
import pathlib

import numpy as np
import pytest
from paths import EC_VECTORS
from hypothesis import given, settings, strategies as st

from storage.ec import gf

VECTORS = EC_VECTORS

elements = st.integers(0, 0xFFFF)
nonzero = st.integers(1, 0xFFFF)


def slow_mul(a, b):
    """Shift-and-add multiplication modulo 0x1100b, independent of the tables."""
    acc = 0
    while b:
        if b & 1:
            acc ^= a
        b >>= 1
        a <<= 1
        if a & 0x10000:
            a ^= 0x1100B
    return acc


def test_tables_cover_the_group():
    assert sorted(set(gf.EXP[:gf.GROUP].tolist())) == list(range(1, 1 << 16))


@settings(max_examples=200)
@given(elements, elements)
def test_mul_matches_shift_and_add(a, b):
    assert gf.mul(a, b) == slow_mul(a, b)


@settings(max_examples=200)
@given(nonzero)
def test_inverse(a):
    assert gf.mul(a, gf.inv(a)) == 1
    with pytest.raises(ZeroDivisionError):
        gf.inv(0)


def test_mul_words_matches_scalar():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 65536, 1000).astype(np.uint16)
    words[:5] = 0
    for coef in (0, 1, 2, 61613):
        got = gf.mul_words(coef, words)
        assert got.tolist() == [gf.mul(coef, int(w)) for w in words]


def test_generator_matrix_matches_liberasurecode():
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    assert gf.rs_vand_matrix(6, 3) == manifest["generator_matrix_rows"]


@pytest.mark.parametrize("k,m", [(1, 1), (2, 1), (4, 2), (6, 3), (8, 4), (10, 4), (3, 5)])
def test_generator_is_systematic_and_mds(k, m):
    g = gf.rs_vand_matrix(k, m)
    assert g[:k] == [[int(i == j) for j in range(k)] for i in range(k)]
    assert g[k] == [1] * k
    for rows in itertools.combinations(range(k + m), k):
        sub = [g[r] for r in rows]
        assert gf.matmul(gf.invert(sub), sub) == g[:k]


def test_large_shapes_derive():
    g = gf.rs_vand_matrix(20, 12)
    assert len(g) == 32 and g[20] == [1] * 20


@pytest.mark.parametrize("k,m", [(0, 3), (6, 0), (20, 13)])
def test_bad_shapes(k, m):
    with pytest.raises(ValueError):
        gf.rs_vand_matrix(k, m)


def test_invert_singular():
    with pytest.raises(ValueError):
        gf.invert([[1, 2], [2, 4]])
