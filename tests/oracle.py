"""An independent oracle for exact top-k: written without importing hardmine, so that a defect in
the library's validation, filters, merging or reference backend cannot hide in it.

Scores are real numbers, computed from the values the library sees (fp16/bf16 rounded to
float32, read in float64): each dot product is ``math.fsum`` of the exact float64 products
(correctly rounded), cosine divides it by norms from ``math.fsum`` of the squares. The order is
the real one: where two float64 approximations are too close to tell apart (within
``NEAR`` relatively), the two real scores are compared exactly in rational arithmetic
(``fractions.Fraction``: a cosine comparison by sign and cross-multiplied squares), and equal
real scores are ordered by the smaller index. So exact multiples of a row tie, near-copies a few
float32 ulps apart are ordered by their true scores, and no rounding decides anything.

docs/precision.md states what the exact paths guarantee against this: the same indices, except
between candidates whose real scores differ by less than float64 resolves.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

#: approximations closer than this (relative) are ordered by exact rational comparison
NEAR = 2.0**-40


def as64(x) -> np.ndarray:
    """The values a backend sees (fp16/bf16 rounded to float32), in float64."""
    x = np.asarray(x)
    return x.astype(np.float32).astype(np.float64)


def dots(queries, candidates) -> np.ndarray:
    """(Q, C) correctly rounded float64 dot products."""
    q, c = as64(queries), as64(candidates)
    out = np.empty((q.shape[0], c.shape[0]))
    for i in range(q.shape[0]):
        out[i] = [math.fsum(row) for row in q[i][None, :] * c]
    return out


def norms(rows) -> np.ndarray:
    rows = as64(rows)
    return np.array([math.sqrt(math.fsum(r * r)) for r in rows])


def scores(queries, candidates, metric: str) -> np.ndarray:
    """(Q, C) float64 approximations of the real scores (within a few float64 ulps)."""
    out = dots(queries, candidates)
    if metric == "cosine":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = out / norms(queries)[:, None] / norms(candidates)[None, :]
    return out


def _exact_dot(a: np.ndarray, b: np.ndarray) -> Fraction:
    return sum((Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b)), Fraction(0))


class Ranking:
    """The exact order of one query's candidates: ``key`` sorts candidate ids by real score,
    descending, equal real scores by the smaller id."""

    def __init__(self, query, candidates, metric: str, approx: np.ndarray):
        self.q, self.c, self.metric, self.approx = as64(query), as64(candidates), metric, approx
        self._cache: dict[int, tuple[Fraction, Fraction]] = {}

    def _exact(self, i: int) -> tuple[Fraction, Fraction]:
        """(D, S): the exact dot product and the candidate's exact squared norm."""
        if i not in self._cache:
            self._cache[i] = (_exact_dot(self.q, self.c[i]), _exact_dot(self.c[i], self.c[i]))
        return self._cache[i]

    def compare(self, a: int, b: int) -> int:
        """-1 when candidate a ranks first, 1 when b does (real score descending, then index)."""
        sa, sb = self.approx[a], self.approx[b]
        if abs(sa - sb) > NEAR * max(abs(sa), abs(sb)) and abs(sa - sb) > 1e-300:
            return -1 if sa > sb else 1
        (da, na), (db, nb) = self._exact(a), self._exact(b)
        if self.metric == "cosine":  # da / sqrt(na) against db / sqrt(nb): by sign, then squares
            sign_a, sign_b = (da > 0) - (da < 0), (db > 0) - (db < 0)
            if sign_a != sign_b:
                return -1 if sign_a > sign_b else 1
            cross = da * da * nb - db * db * na  # > 0: |s_a| > |s_b|
            larger = sign_a * ((cross > 0) - (cross < 0))
        else:
            larger = (da > db) - (da < db)
        if larger:
            return -1 if larger > 0 else 1
        return -1 if a < b else 1

    def order(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` in exact order: sorted by the approximations, then each run of neighbours closer
        than NEAR re-sorted by exact comparison (outside a run the approximations decide)."""
        ids = ids[np.argsort(-self.approx[ids], kind="stable")]
        values = self.approx[ids]
        close = np.abs(np.diff(values)) <= NEAR * np.maximum(np.abs(values[1:]), np.abs(values[:-1])) + 1e-300
        out = ids.copy()
        start = 0
        for end in range(1, ids.size + 1):
            if end < ids.size and close[end - 1]:
                continue
            if end - start > 1:
                out[start:end] = sorted(ids[start:end].tolist(), key=functools.cmp_to_key(self.compare))
            start = end
        return out


def topk(queries, candidates, k: int, metric: str = "dot", excluded: np.ndarray | None = None,
         admissible=None, keys: np.ndarray | None = None) -> np.ndarray:
    """(Q, k) indices of the exact top-k, -1 padded. ``excluded`` (Q, C) True: never returned;
    ``admissible(row, approx_scores) -> (C,) bool``: a window on the scores returned (the library
    applies it to fl32 of the score); ``keys`` (C,): one candidate per key, its best. NaN and
    -inf scores are never returned."""
    q, c = as64(queries), as64(candidates)
    approx = scores(q, c, metric)
    out = np.full((q.shape[0], k), -1, dtype=np.int64)
    for row in range(q.shape[0]):
        keep = approx[row] > -np.inf
        if excluded is not None:
            keep &= ~excluded[row]
        if admissible is not None:
            keep &= admissible(row, approx[row])
        ids = Ranking(q[row], c, metric, approx[row]).order(np.flatnonzero(keep))
        if keys is not None:
            _, first = np.unique(keys[ids], return_index=True)
            ids = ids[np.sort(first)]
        ids = ids[:k]
        out[row, : ids.size] = ids
    return out


#: what float64 resolves (docs/precision.md "Exact scores"): the exact paths' scores are within a
#: few ulps of the real ones, so candidates whose real scores are this close may be ordered by
#: their float64 scores rather than by index
FLOAT64_RESOLUTION = 2.0**-44


def differing_rows(got: np.ndarray, want: np.ndarray, approx: np.ndarray,
                   resolution: float = FLOAT64_RESOLUTION) -> list[int]:
    """Rows of ``got`` that differ from the oracle's ``want`` other than by swapping candidates
    whose real scores (``approx``, (Q, C)) are within ``resolution`` of each other."""
    rows = []
    for row in np.flatnonzero((got != want).any(axis=1)):
        for a, b in zip(got[row], want[row]):
            if a == b:
                continue
            if a < 0 or b < 0:
                rows.append(int(row))
                break
            sa, sb = approx[row, a], approx[row, b]
            if abs(sa - sb) > resolution * max(abs(sa), abs(sb)):
                rows.append(int(row))
                break
    return rows
