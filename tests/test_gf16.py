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


def encode_reference(matrix, data, hsize, headers, bs, payload_crc):
    """What encode_fragments must write, built from split + matmul + zlib."""
    import zlib
    cols = len(matrix[0])
    padded = data + bytes(cols * bs - len(data))
    payloads = [padded[i * bs:(i + 1) * bs] for i in range(cols)]
    payloads += reference(matrix, payloads) if bs else [b""] * len(matrix)
    frags = []
    for i, p in enumerate(payloads):
        h = bytearray(headers[i * hsize:(i + 1) * hsize])
        if payload_crc:
            crc_at, meta_len, meta_at = payload_crc
            h[crc_at:crc_at + 4] = zlib.crc32(p).to_bytes(4, "little")
            h[meta_at:meta_at + 4] = zlib.crc32(bytes(h[:meta_len])).to_bytes(4, "little")
        frags.append(bytes(h) + p)
    return frags


@pytest.mark.parametrize("rows,cols", [(3, 6), (1, 1), (6, 3), (9, 4)])
@pytest.mark.parametrize("size", [0, 1, 127, 6 * 200, 6 * 200 - 3, 6 * 8192 + 6 * 64, 100_003])
def test_encode_fragments(mod, rows, cols, size):
    rng = np.random.default_rng(size + rows)
    matrix = rng.integers(0, 65536, (rows, cols)).tolist()
    matrix[0][0] = 1   # the kernels' special cases
    prepared = mod.Gf16Matrix(matrix)
    data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    bs = 2 * -(-size // (2 * cols))
    for hsize, payload_crc in [(0, None), (80, None), (80, (21, 59, 67)), (8, (4, 4, 0))]:
        headers = rng.integers(0, 256, (rows + cols) * hsize, dtype=np.uint8).tobytes()
        want = encode_reference(matrix, data, hsize, headers, bs, payload_crc)
        for kernel in kernels(mod):
            frags = [bytearray(b"\xee" * (hsize + bs + 3)) for _ in range(rows + cols)]
            got = mod.encode_fragments(prepared, memoryview(data), frags, headers, bs,
                                       payload_crc, kernel=kernel)
            assert got == hsize + bs
            assert [bytes(f[:got]) for f in frags] == want, (kernel, hsize)
            assert all(f[got:] == b"\xee" * 3 for f in frags)


def test_encode_fragments_larger_blocksize_and_any_buffers(mod):
    prepared = mod.Gf16Matrix([[1, 2], [3, 4]])
    data = bytes(range(10))
    want = encode_reference([[1, 2], [3, 4]], data, 2, b"abcdefgh", 8, None)
    outs = [np.zeros(10, dtype=np.uint8), bytearray(10), memoryview(bytearray(12))[1:11],
            bytearray(10)]
    assert mod.encode_fragments(prepared, bytearray(data), iter(outs), b"abcdefgh", 8) == 10
    assert [bytes(o) for o in outs] == want


@pytest.mark.parametrize("case", ["count", "odd_bs", "neg_bs", "too_much_data", "short_buffer",
                                  "headers_len", "crc_fit", "crc_shape", "matrix", "kernel",
                                  "readonly"])
def test_encode_fragments_errors_write_nothing(mod, case):
    prepared = mod.Gf16Matrix([[1, 2]])
    args = dict(data=bytes(8), headers=bytes(6), blocksize=4, payload_crc=None, kernel=None)
    frags = [bytearray(b"\xee" * 6) for _ in range(3)]
    matrix = prepared
    exc = ValueError
    if case == "count":
        frags = frags[:2]
    elif case == "odd_bs":
        args.update(blocksize=5)
    elif case == "neg_bs":
        args.update(blocksize=-2)
    elif case == "too_much_data":
        args.update(data=bytes(9))
    elif case == "short_buffer":
        frags[2] = bytearray(b"\xee" * 5)
    elif case == "headers_len":
        args.update(headers=bytes(7))
    elif case == "crc_fit":
        args.update(payload_crc=(0, 2, 0))     # 2-byte headers: no room for a u32
    elif case == "crc_shape":
        args.update(payload_crc=(0, 2))
    elif case == "matrix":
        matrix = [[1, 2]]
    elif case == "kernel":
        args.update(kernel="no-such-kernel")
    elif case == "readonly":
        frags[2] = bytes(6)
        exc = (TypeError, BufferError)
    before = [bytes(f) for f in frags]
    with pytest.raises(exc):
        mod.encode_fragments(matrix, args["data"], frags, args["headers"], args["blocksize"],
                             args["payload_crc"], kernel=args["kernel"])
    assert [bytes(f) for f in frags] == before


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_encode_fragments_fast_agrees_with_twin(data):
    fast = importlib.import_module("_fastpath.gf16")
    pure = importlib.import_module("storage.pure.gf16")
    rows = data.draw(st.integers(1, 5))
    cols = data.draw(st.integers(1, 7))
    matrix = data.draw(st.lists(st.lists(st.integers(0, 0xFFFF), min_size=cols, max_size=cols),
                                min_size=rows, max_size=rows))
    segment = data.draw(st.binary(max_size=3000))
    bs = 2 * -(-len(segment) // (2 * cols)) + 2 * data.draw(st.integers(0, 40))
    headers = data.draw(st.binary(min_size=(rows + cols) * 12, max_size=(rows + cols) * 12))
    crc = data.draw(st.sampled_from([None, (0, 12, 8), (4, 0, 4)]))
    results = []
    for mod, kernel in [(pure, None)] + [(fast, k) for k in fast.available_kernels()]:
        frags = [bytearray(12 + bs) for _ in range(rows + cols)]
        mod.encode_fragments(mod.Gf16Matrix(matrix), segment, frags, headers, bs, crc,
                             kernel=kernel)
        results.append(frags)
    assert all(r == results[0] for r in results)
