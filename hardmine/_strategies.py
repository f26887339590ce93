"""Choosing negatives inside the rank window (SPEC 5.2), shared by every backend.

Random draws come from a counter-based hash of (seed, query row, candidate id),
so they do not depend on block sizes, thread counts or the backend.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("top", "random", "semihard", "softmax", "cluster")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform(seed: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) float64 per (seed, row, id) via the splitmix64 finaliser.

    Examples
    --------
    >>> u = uniform(0, np.array([[0], [1]]), np.array([[5, 6], [5, 6]]))
    >>> u.shape, bool(((0 < u) & (u < 1)).all())
    ((2, 2), True)
    """
    state = np.full(np.broadcast(rows, ids).shape, np.uint64(seed % 2**64), dtype=np.uint64)
    state = state * _GOLDEN
    state ^= np.asarray(rows, dtype=np.int64).astype(np.uint64) * _MIX1
    state ^= np.asarray(ids, dtype=np.int64).astype(np.uint64) * _MIX2
    state ^= state >> np.uint64(30)
    state *= _MIX1
    state ^= state >> np.uint64(27)
    state *= _MIX2
    state ^= state >> np.uint64(31)
    return ((state >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def select(
    strategy: str, indices: np.ndarray, scores: np.ndarray, count: int, seed: int, temperature: float | None,
    first_row: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Picks ``count`` entries per row of a rank window.

    ``indices``/``scores`` are (Q, w), best first, -1/-inf padded at the end, for
    query rows ``first_row, first_row + 1, ...``. The picks keep that order (score
    descending) and are padded the same way.
    """
    num_queries, width = indices.shape
    valid = indices >= 0
    if strategy in ("top", "semihard") or width <= count:
        columns = np.broadcast_to(np.arange(min(count, width)), (num_queries, min(count, width)))
    else:
        rows = first_row + np.arange(num_queries, dtype=np.int64)[:, None]
        draws = uniform(seed, rows, indices)
        if strategy == "random":
            key = np.where(valid, draws, np.inf)
        else:  # softmax: Gumbel-top-k draws without replacement, P proportional to exp(s / T)
            gumbel = -np.log(-np.log(draws))
            key = np.where(valid, -(scores.astype(np.float64) / temperature + gumbel), np.inf)
        columns = np.sort(np.argsort(key, axis=1, kind="stable")[:, :count], axis=1)
    picked_indices = np.full((num_queries, count), -1, dtype=np.int64)
    picked_scores = np.full((num_queries, count), -np.inf, dtype=np.float32)
    picked_indices[:, : columns.shape[1]] = np.take_along_axis(indices, columns, axis=1)
    picked_scores[:, : columns.shape[1]] = np.take_along_axis(scores, columns, axis=1)
    return picked_indices, picked_scores
