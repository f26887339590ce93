"""Seeded draws that depend only on (seed, query row, candidate id): the same on every
backend, block size, thread count, shard layout and machine (SPEC 5.2)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Rule(NamedTuple):
    """How a backend's ``sample`` draws: ``temperature`` None for uniform draws; ``first_row``
    and ``first_id`` are the global row of query 0 and id of candidate 0 of the call."""

    seed: int
    temperature: float | None
    first_row: int = 0
    first_id: int = 0


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


def uniform_one(seed, row, key):
    """:func:`uniform` for one (seed, row, id or key), as plain scalar code that numba compiles
    for the Numba sampler (``numba.njit``) and the CUDA kernels (``cuda.jit(device=True)``)."""
    state = np.uint64(seed) * _GOLDEN
    state ^= np.uint64(row) * _MIX1
    state ^= np.uint64(key) * _MIX2
    state ^= state >> np.uint64(30)
    state *= _MIX1
    state ^= state >> np.uint64(27)
    state *= _MIX2
    state ^= state >> np.uint64(31)
    return (np.float64(state >> np.uint64(11)) + 0.5) / 9007199254740992.0


def kept_before(value_a, score_a, id_a, value_b, score_b, id_b):
    """The order a draw keeps entries in, a before b: higher priority (or value), then higher
    score, then the smaller index — the C++ core's rule; compiled by numba like :func:`uniform_one`."""
    if value_a != value_b:
        return value_a > value_b
    return score_a > score_b or (score_a == score_b and id_a < id_b)


def priorities(seed: int, rows: np.ndarray, ids: np.ndarray, scores: np.ndarray,
               temperature: float | None) -> np.ndarray:
    """Each entry's float64 sampling priority; the ``n`` highest are a draw of ``n`` without
    replacement: uniform (``-u``) or, with ``temperature``, P proportional to exp(s / temperature)
    (``s / temperature + Gumbel(u)``, the Gumbel-top-k trick). The compiled core's sampler
    computes the same values. ``ids`` are candidate ids, or their keys under ``exclude_keys``.

    Examples
    --------
    >>> p = priorities(0, np.array([[0]]), np.array([[3, 4]]), np.array([[0.5, 0.1]], np.float32), None)
    >>> p.shape, bool((p < 0).all())
    ((1, 2), True)
    """
    draws = uniform(seed, rows, ids)
    if temperature is None:
        return -draws
    return scores.astype(np.float64) / temperature - np.log(-np.log(draws))
