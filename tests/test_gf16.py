"""_fastpath.gf16 and its twin storage.pure.gf16: same results, same errors."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import twin_params
from storage.ec import gf


@pytest.fixture(params=twin_params("gf16"))
def mod(request):
    return importlib.import_module(request.param)


def kernels(mod):
    return [None, *mod.available_kernels()]


def reference(matrix, inputs):
    words = [np.frombuffer(b, dtype="<u2") for b in inputs]
    return [w.tobytes() for w in gf.matmul_words(matrix, words)]


def random_regions(rng, count, nbytes):
    return [rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes() for _ in range(count)]


@pytest.mark.parametrize("nbytes", [0, 2, 30, 62, 64, 66, 128, 190, 4096, 8192 + 66, 20002])
def test_matmul_matches_reference(mod, nbytes):
    rng = np.random.default_rng(nbytes)
    ins = random_regions(rng, 6, nbytes)
    matrices = [
        gf.rs_vand_matrix(6, 3)[6:],
        rng.integers(0, 65536, (5, 6)).tolist(),
        [[0, 1, 0, 1, 2, 65535]],
    ]
    for matrix in matrices:
        want = reference(matrix, ins)
        for kernel in kernels(mod):
            outs = [bytearray(b"\xaa" * nbytes) for _ in matrix]
            mod.gf16_matmul(matrix, ins, outs, kernel=kernel)
            assert [bytes(o) for o in outs] == want, kernel


def test_prepared_matrix_and_wide_shapes(mod):
    rng = np.random.default_rng(7)
    matrix = rng.integers(0, 65536, (9, 11)).tolist()
    prepared = mod.Gf16Matrix(matrix)
    assert (prepared.rows, prepared.cols) == (9, 11)
    assert prepared.coefficients() == matrix
    ins = random_regions(rng, 11, 1000)
    want = reference(matrix, ins)
    for kernel in kernels(mod):
        outs = [bytearray(1000) for _ in range(9)]
        mod.gf16_matmul(prepared, ins, outs, kernel=kernel)
        assert [bytes(o) for o in outs] == want


def test_accepts_any_buffer(mod):
    rng = np.random.default_rng(3)
    ins = random_regions(rng, 2, 256)
    want = reference([[3, 5]], ins)
    out = np.zeros(256, dtype=np.uint8)
    mod.gf16_matmul([[3, 5]], [memoryview(ins[0]), bytearray(ins[1])], [out])
    assert out.tobytes() == want[0]
    out2 = bytearray(300)
    mod.gf16_matmul([[3, 5]], ins, [memoryview(out2)[10:266]])
    assert bytes(out2[10:266]) == want[0] and out2[:10] == bytes(10)


def test_gf_mul(mod):
    assert mod.gf_mul(0, 1234) == 0
    assert mod.gf_mul(1, 1234) == 1234
    assert mod.gf_mul(2, 0x8000) == 0x100B  # x^16 reduced by 0x1100b
    for a, b in [(3, 7), (0xFFFF, 0xFFFF), (27503, 129)]:
        assert mod.gf_mul(a, b) == gf.mul(a, b)
    with pytest.raises(ValueError):
        mod.gf_mul(1 << 16, 1)


@pytest.mark.parametrize("case", ["odd", "len_in", "len_out", "n_in", "n_out", "bad_coef",
                                  "ragged", "kernel", "readonly"])
def test_errors(mod, case):
    ins = [bytes(8), bytes(8)]
    outs = [bytearray(8)]
    matrix = [[1, 2]]
    kernel = None
    if case == "odd":
        ins, outs = [bytes(7), bytes(7)], [bytearray(7)]
    elif case == "len_in":
        ins = [bytes(8), bytes(10)]
    elif case == "len_out":
        outs = [bytearray(10)]
    elif case == "n_in":
        ins = [bytes(8)]
    elif case == "n_out":
        outs = [bytearray(8), bytearray(8)]
    elif case == "bad_coef":
        matrix = [[1, 1 << 16]]
    elif case == "ragged":
        matrix = [[1, 2], [3]]
    elif case == "kernel":
        kernel = "no-such-kernel"
    elif case == "readonly":
        outs = [bytes(8)]
    exc = (TypeError, BufferError) if case == "readonly" else ValueError
    with pytest.raises(exc):
        mod.gf16_matmul(matrix, ins, outs, kernel=kernel)


def test_kernel_introspection(mod):
    assert mod.kernel_name() in mod.available_kernels()
    assert isinstance(mod.cpu_features(), dict)


def test_scalar_kernel_forced_by_env(tmp_path):
    import subprocess
    import sys
    code = "import _fastpath.gf16 as g; print(g.kernel_name())"
    env = {"STORAGE_NODE_GF16_KERNEL": "scalar", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "scalar"


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_fast_kernels_agree_with_twin(data):
    fast = importlib.import_module("_fastpath.gf16")
    pure = importlib.import_module("storage.pure.gf16")
    rows = data.draw(st.integers(1, 5))
    cols = data.draw(st.integers(1, 7))
    coef = st.one_of(st.sampled_from([0, 1, 2, 0xFFFF]), st.integers(0, 0xFFFF))
    matrix = data.draw(st.lists(st.lists(coef, min_size=cols, max_size=cols),
                                min_size=rows, max_size=rows))
    nwords = data.draw(st.integers(0, 300))
    ins = [data.draw(st.binary(min_size=2 * nwords, max_size=2 * nwords)) for _ in range(cols)]
    results = []
    for mod, kernel in [(pure, None)] + [(fast, k) for k in fast.available_kernels()]:
        outs = [bytearray(2 * nwords) for _ in range(rows)]
        mod.gf16_matmul(matrix, ins, outs, kernel=kernel)
        results.append(outs)
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("size,lens", [(0, [4, 4]), (10, [4, 4, 4]), (12, [4, 4, 4]),
                                       (5, [2, 0, 6]), (20, [8])])
def test_split_into(mod, size, lens):
    data = bytes(range(1, size + 1))
    outs = [bytearray(b"\xff" * n) for n in lens]
    copied = mod.split_into(data, outs)
    padded = data + bytes(max(0, sum(lens) - size))
    assert copied == min(size, sum(lens))
    assert b"".join(outs) == padded[:sum(lens)]


def test_split_into_readonly(mod):
    with pytest.raises((TypeError, BufferError)):
        mod.split_into(b"abc", [bytes(3)])
