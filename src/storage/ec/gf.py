"""GF(2^16) as liberasurecode_rs_vand uses it: the readable reference.

Field: polynomial 0x1100b (x^16 + x^12 + x^3 + x + 1), generator 2. Data
symbols are little-endian uint16 words. Arithmetic here goes through
log/antilog tables with numpy; the compiled kernels in ``_fastpath.gf16``
must agree with it word for word.
"""
import numpy as np

POLY = 0x1100B
ORDER = 1 << 16          # field size
GROUP = ORDER - 1        # order of the multiplicative group


def _build_tables():
    """exp[i] = 2^i (doubled in length so exp[log a + log b] needs no modulo);
    log[a] for a != 0 (log[0] is unused and set to 0)."""
    exp = np.zeros(2 * GROUP, dtype=np.uint16)
    log = np.zeros(ORDER, dtype=np.int64)
    x = 1
    for i in range(GROUP):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & ORDER:
            x ^= POLY
    exp[GROUP:] = exp[:GROUP]
    return exp, log


EXP, LOG = _build_tables()


def mul(a, b):
    """Product of two field elements (ints)."""
    if a == 0 or b == 0:
        return 0
    return int(EXP[LOG[a] + LOG[b]])


def inv(a):
    """Multiplicative inverse of a non-zero element."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^16)")
    return int(EXP[(GROUP - LOG[a]) % GROUP])


def power(a, n):
    """a**n in the field (0**0 == 1, as in a Vandermonde row)."""
    if n == 0:
        return 1
    if a == 0:
        return 0
    return int(EXP[(LOG[a] * n) % GROUP])


def mul_words(coef, words):
    """coef * each word of a uint16 numpy array (a new array)."""
    if coef == 0:
        return np.zeros_like(words)
    out = EXP[LOG[words] + LOG[coef]]
    out[words == 0] = 0
    return out


def matmul_words(matrix, inputs):
    """Rows of ``matrix`` applied to uint16 arrays: out_r = XOR_c m[r][c] * in_c."""
    outputs = []
    for row in matrix:
        acc = np.zeros_like(inputs[0])
        for coef, words in zip(row, inputs):
            acc ^= mul_words(coef, words)
        outputs.append(acc)
    return outputs


def rs_vand_matrix(k, m):
    """The (k+m) x k systematic generator matrix of liberasurecode_rs_vand.

    Start from the Vandermonde matrix on the points 0..k+m-1 (row i is
    [i^0, i^1, ..., i^(k-1)]); column operations turn the top k x k block into
    the identity; each parity column is then scaled so parity row 0 is all
    ones.
    """
    if k < 1 or m < 1 or k + m > 32:
        raise ValueError(f"need k >= 1, m >= 1 and k + m <= 32 (got k={k}, m={m})")
    n = k + m
    a = [[power(i, j) for j in range(k)] for i in range(n)]
    for i in range(k):
        # The diagonal element is non-zero for a Vandermonde matrix on
        # distinct points (column operations keep the leading minors).
        if a[i][i] == 0:
            for j in range(i + 1, k):
                if a[i][j]:
                    for row in a:
                        row[i], row[j] = row[j], row[i]
                    break
        scale = inv(a[i][i])
        if scale != 1:
            for row in a:
                row[i] = mul(row[i], scale)
        for j in range(k):
            if j != i and a[i][j]:
                factor = a[i][j]
                for row in a:
                    row[j] ^= mul(factor, row[i])
    for j in range(k):
        scale = inv(a[k][j])
        if scale != 1:
            for i in range(k, n):
                a[i][j] = mul(a[i][j], scale)
    return a


def invert(matrix):
    """Inverse of a square matrix by Gauss-Jordan; ValueError if singular."""
    n = len(matrix)
    a = [list(row) + [1 if i == j else 0 for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if a[r][col]), None)
        if pivot is None:
            raise ValueError("matrix is singular")
        a[col], a[pivot] = a[pivot], a[col]
        scale = inv(a[col][col])
        a[col] = [mul(v, scale) for v in a[col]]
        for r in range(n):
            if r != col and a[r][col]:
                factor = a[r][col]
                a[r] = [v ^ mul(factor, p) for v, p in zip(a[r], a[col])]
    return [row[n:] for row in a]


def matmul(a, b):
    """Product of two matrices (lists of lists of field elements)."""
    out = []
    for row in a:
        res = []
        for j in range(len(b[0])):
            acc = 0
            for i, v in enumerate(row):
                acc ^= mul(v, b[i][j])
            res.append(acc)
        out.append(res)
    return out
