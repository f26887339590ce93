"""The ``reference`` backend: the simplest obviously-correct float64 NumPy code.

Every other backend is tested against it. It builds one (query block, C) score
matrix at a time, so it is slow and memory-hungry by design; never use it for
real work.
"""

from __future__ import annotations

import numpy as np

from .. import _exact as exact
from .. import _merge as merge
from .._draws import Rule, priorities
from .._problem import HOST, Problem

_QUERY_BLOCK = 256


def _rows64(emb, start: int, stop: int) -> np.ndarray:
    return np.asarray(emb.array[start:stop], dtype=np.float32).astype(np.float64)


def score_block(problem: Problem, start: int, stop: int) -> np.ndarray:
    """Exact float64 scores of queries [start, stop) against every candidate: the dot product, or
    the cosine, of docs/precision.md "Exact scores" (hardmine/_exact.py)."""
    queries = _rows64(problem.queries, start, stop)
    candidates = _rows64(problem.candidates, 0, problem.candidates.rows)
    dots = exact.dots(queries, candidates)
    if problem.metric != "cosine":
        return dots
    return exact.cosine(dots, exact.squared_norms(queries)[:, None], exact.squared_norms(candidates)[None, :])


def excluded_mask(problem: Problem, start: int, stop: int) -> np.ndarray:
    """(stop - start, C) True where a candidate is not admissible for the query."""
    mask = np.zeros((stop - start, problem.candidates.rows), dtype=bool)
    if problem.exclude_indptr is not None:
        for row, query in enumerate(range(start, stop)):
            ids = problem.exclude_indices[problem.exclude_indptr[query] : problem.exclude_indptr[query + 1]]
            mask[row, ids] = True
    if problem.query_groups is not None:
        mask |= problem.query_groups[start:stop, None] == problem.candidate_groups[None, :]
    if problem.excluded_key_indptr is not None:
        for row, query in enumerate(range(start, stop)):
            keys = problem.excluded_key_indices[
                problem.excluded_key_indptr[query] : problem.excluded_key_indptr[query + 1]
            ]
            mask[row] |= np.isin(problem.candidate_keys, keys)
    return mask


def outside_bounds(problem: Problem, start: int, stop: int, block: np.ndarray) -> np.ndarray:
    """True where a score falls outside the query's mining window; as every engine, the window
    applies to the score returned, fl32(s)."""
    outside = np.zeros(block.shape, dtype=bool)
    strict = problem.exclusive_bounds
    returned = block.astype(np.float32)
    if problem.upper_bounds is not None:
        upper = problem.upper_bounds[start:stop, None]
        outside |= ~(returned < upper) if strict else ~(returned <= upper)
    if problem.lower_bounds is not None:
        lower = problem.lower_bounds[start:stop, None]
        outside |= ~(returned > lower) if strict else ~(returned >= lower)
    return outside


def _padded(array: np.ndarray, width: int, fill) -> np.ndarray:
    """(Q, width) from a narrower result, ``fill`` in the missing columns."""
    out = np.full((array.shape[0], width), fill, dtype=array.dtype)
    out[:, : array.shape[1]] = array[:, :width]
    return out


class ReferenceBackend:
    name = "reference"
    devices = frozenset({HOST})
    precisions = frozenset({"fp32"})

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num_queries = problem.queries.rows
        indices = np.full((num_queries, k), -1, dtype=np.int64)
        scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
        counts = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        for start in range(0, num_queries, _QUERY_BLOCK):
            stop = min(start + _QUERY_BLOCK, num_queries)
            block = score_block(problem, start, stop)
            returned = block.astype(np.float32)  # the tallies count the scores returned, fl32(s)
            for f, (bound, below) in enumerate(zip(problem.count_bounds, problem.count_below)):
                edge = bound[start:stop, None]
                counts[start:stop, f] = ((returned < edge) & (returned > -np.inf) if below
                                         else returned > edge).sum(axis=1)
            # NaN and -inf scores, like excluded candidates, are never returned.
            admissible = ~excluded_mask(problem, start, stop) & (block > -np.inf)
            admissible &= ~outside_bounds(problem, start, stop, block)
            for row in range(stop - start):
                ids = np.flatnonzero(admissible[row])
                # Stable sort on -score keeps ascending ids among equal scores.
                order = ids[np.argsort(-block[row, ids], kind="stable")]
                if problem.candidate_keys is not None:  # the best candidate of each key
                    _, first = np.unique(problem.candidate_keys[order], return_index=True)
                    order = order[np.sort(first)]
                order = order[:k]
                indices[start + row, : order.size] = order
                scores[start + row, : order.size] = block[row, order]
        return indices, scores, counts

    def sample(self, problem: Problem, count: int, rule: Rule, top_k: int = 0):
        """Every admissible candidate in window order (one per key), then the ``count`` highest
        priorities among them, and the first ``top_k`` of that order: the direct definition the
        engine's one-pass samplers are tested against."""
        indices, scores, counts = self.topk(problem, max(1, problem.candidates.rows))
        valid = indices >= 0
        ids = np.where(valid, indices + rule.first_id, 0)
        if problem.candidate_keys is not None:
            ids = np.where(valid, problem.candidate_keys[np.maximum(indices, 0)], 0)
        rows = rule.first_row + np.arange(indices.shape[0])[:, None]
        found = np.where(valid, priorities(rule.seed, rows, ids, scores, rule.temperature), -np.inf)
        columns = merge.drawn_columns(found, count)
        picked = [np.take_along_axis(array, columns, axis=1) for array in (indices, scores, found)]
        return (*(_padded(array, count, fill) for array, fill in zip(picked, (-1, -np.inf, -np.inf))), counts,
                _padded(indices, top_k, -1), _padded(scores, top_k, -np.inf))

    def violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        num_queries = problem.queries.rows
        count = np.zeros(num_queries, dtype=np.int64)
        hinge_sum = np.zeros(num_queries, dtype=np.float64)
        max_hinge = np.zeros(num_queries, dtype=np.float32)
        argmax = np.full(num_queries, -1, dtype=np.int64)
        for start in range(0, num_queries, _QUERY_BLOCK):
            stop = min(start + _QUERY_BLOCK, num_queries)
            block = score_block(problem, start, stop)
            admissible = ~excluded_mask(problem, start, stop) & ~np.isnan(block)
            for row in range(stop - start):
                query = start + row
                scores = np.where(admissible[row], block[row], -np.inf)
                hinge = margin + scores - float(positive_scores[query])
                violating = admissible[row] & (hinge > 0)
                count[query] = int(violating.sum())
                hinge_sum[query] = float(hinge[violating].sum())
                if admissible[row].any():
                    best = int(np.argmax(scores))  # first maximum = smallest index
                    argmax[query] = best
                    max_hinge[query] = max(0.0, float(hinge[best]))
        return count, hinge_sum, max_hinge, argmax

    def similarity(self, problem: Problem) -> np.ndarray:
        return score_block(problem, 0, problem.queries.rows).astype(np.float32)
