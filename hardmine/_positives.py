"""Every query's positives as sparse rows (ids and group members together), their exact
scores (float64 sums of the values the engine sees) and the keys a query may not get."""

from __future__ import annotations

import numpy as np

from ._problem import Problem

#: rows of (query, positive) pairs gathered at a time to compute positive scores
_PAIR_CHUNK = 1 << 16


def group_members(query_groups: np.ndarray, candidate_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the candidates sharing each query's group."""
    order = np.argsort(candidate_groups, kind="stable")
    sorted_groups = candidate_groups[order]
    left = np.searchsorted(sorted_groups, query_groups, side="left")
    counts = np.searchsorted(sorted_groups, query_groups, side="right") - left
    indptr = np.zeros(query_groups.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    offsets = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1] - left, counts)
    return indptr, order[offsets]


def positive_members(problem: Problem) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR of every query's positives (ids and group members together), or None."""
    parts = []
    if problem.exclude_indptr is not None:
        parts.append((problem.exclude_indptr, problem.exclude_indices))
    if problem.query_groups is not None:
        parts.append(group_members(problem.query_groups, problem.candidate_groups))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([np.repeat(np.arange(problem.queries.rows), np.diff(p[0])) for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    pairs = np.unique(np.stack([rows, ids], axis=1), axis=0)
    indptr = np.zeros(problem.queries.rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=problem.queries.rows), out=indptr[1:])
    return indptr, np.ascontiguousarray(pairs[:, 1])


def pair_scores(problem: Problem, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float64 score of each (query row, candidate id) pair, gathered in chunks."""
    dots = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _PAIR_CHUNK):
        stop = min(start + _PAIR_CHUNK, rows.shape[0])
        q = np.asarray(problem.queries.array[rows[start:stop]])
        c = np.asarray(problem.candidates.array[ids[start:stop]])
        if q.dtype not in (np.float32, np.float16):  # bfloat16: einsum cannot cast it on the fly
            q, c = q.astype(np.float32), c.astype(np.float32)
        dots[start:stop] = np.einsum("ij,ij->i", q, c, dtype=np.float64)  # exact products, float64 sums
    if problem.metric == "cosine":
        dots *= problem.query_scales[rows] * problem.candidate_scales[ids]
    return dots


def positive_scores(problem: Problem, indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s_p per query (the smallest score among its positives, NaN without positives) and
    the float64 score of every (query, positive) pair, in CSR order."""
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(problem.queries.rows, dtype=np.int64), counts)
    dots = pair_scores(problem, rows, indices)
    out = np.full(problem.queries.rows, np.nan, dtype=np.float32)
    has = counts > 0
    if has.any():
        out[has] = np.minimum.reduceat(dots, indptr[:-1][has])
    return out, dots


def key_exclusions(keys: np.ndarray, members: tuple[np.ndarray, np.ndarray] | None, num_queries: int):
    """Per query, the sorted distinct keys of its positives (CSR)."""
    if members is None:
        return np.zeros(num_queries + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    indptr, ids = members
    rows = np.repeat(np.arange(num_queries, dtype=np.int64), np.diff(indptr))
    pairs = np.unique(np.stack([rows, keys[ids]], axis=1), axis=0) if ids.size else np.zeros((0, 2), np.int64)
    key_indptr = np.zeros(num_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=num_queries), out=key_indptr[1:])
    return key_indptr, np.ascontiguousarray(pairs[:, 1])
