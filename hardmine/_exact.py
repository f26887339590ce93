"""The exact score of docs/precision.md ("Exact scores") in NumPy, operation for operation as the
core's certified paths compute it (csrc/cpu/int8_kernels: ``exact_dot``, ``exact_score``), so that
every exact path gives the same float64 bits: the reference backend's scores and every backend's
positive scores come from here.

The dot product of two float32 rows (values read in float64: the products are exact) is summed
in 16 lanes, lane j adding the products at i = j (mod 16) by increasing i, then the lanes are
folded j + (j + 8), j + (j + 4), j + (j + 2), 0 + 1. The cosine is sign(D) sqrt(q / S_q) with S
each row's dot product with itself and q = D D / S_c rounded as the real quotient (from the exact
D D and the exact remainder): collinear rows with exact sums (integer rows, any rows at d = 1) tie.
"""

from __future__ import annotations

import numpy as np

LANES = 16
#: float64 values per step of :func:`dots` ((rows, C, 16) lanes): 16 MiB
_STEP_VALUES = 1 << 21


def _lanes(rows: np.ndarray) -> np.ndarray:
    """(n, d) float64 -> (n, ceil(d / 16), 16), zeros past d."""
    steps = -(-rows.shape[1] // LANES)
    out = np.zeros((rows.shape[0], steps * LANES))
    out[:, : rows.shape[1]] = rows
    return out.reshape(rows.shape[0], steps, LANES)


def _fold(lanes: np.ndarray) -> np.ndarray:
    width = LANES // 2
    while width:
        lanes = lanes[..., :width] + lanes[..., width : 2 * width]
        width //= 2
    return lanes[..., 0]


def dots(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n, m) dot products of every pair of float64 rows (float32 values)."""
    a, b = _lanes(queries), _lanes(candidates)
    out = np.empty((a.shape[0], b.shape[0]))
    step = max(1, _STEP_VALUES // max(1, LANES * b.shape[0]))
    with np.errstate(invalid="ignore", over="ignore"):  # rows of check_finite=False
        for start in range(0, a.shape[0], step):
            lanes = np.zeros((min(step, a.shape[0] - start), b.shape[0], LANES))
            for t in range(a.shape[1]):
                lanes += a[start : start + step, None, t, :] * b[None, :, t, :]
            out[start : start + step] = _fold(lanes)
    return out


def pair_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) dot products of a[i] and b[i] (float64 rows of float32 values)."""
    x, y = _lanes(a), _lanes(b)
    lanes = np.zeros((x.shape[0], LANES))
    with np.errstate(invalid="ignore", over="ignore"):
        for t in range(x.shape[1]):
            lanes += x[:, t, :] * y[:, t, :]
    return _fold(lanes)


def squared_norms(rows: np.ndarray) -> np.ndarray:
    return pair_dots(rows, rows)


_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a float64 into two 26-bit halves


def _product_error(a: np.ndarray, b: np.ndarray, product: np.ndarray) -> np.ndarray:
    """a * b - product exactly, for product = fl(a * b) (Dekker's two-product: the value a fused
    multiply-add gives, without one)."""
    big_a, big_b = _SPLIT * a, _SPLIT * b
    a_high = big_a - (big_a - a)
    b_high = big_b - (big_b - b)
    a_low, b_low = a - a_high, b - b_high
    return a_low * b_low - (((product - a_high * b_high) - a_low * b_high) - a_high * b_low)


def cosine(dot: np.ndarray, query_norm2: np.ndarray, candidate_norm2: np.ndarray) -> np.ndarray:
    """The exact cosine from exact dot products and squared norms (broadcast alike): the core's
    ``exact_score``, the same operations (its fused multiply-adds' exact errors by Dekker's products)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN for rows of check_finite=False
        dot, candidate_norm2 = np.broadcast_arrays(dot, candidate_norm2)
        high = dot * dot
        low = _product_error(dot, dot, high)
        ratio = high / candidate_norm2
        product = ratio * candidate_norm2
        remainder = (high - product) - _product_error(ratio, candidate_norm2, product)
        quotient = ratio + (remainder + low) / candidate_norm2
        return np.copysign(np.sqrt(quotient / query_norm2), dot)
