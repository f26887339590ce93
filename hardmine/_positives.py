"""Every query's positives as sparse rows (ids and group members together), their exact
scores (docs/precision.md, "Exact scores"), the keys a query may not get, and the same-label
pairs of a training batch."""

from __future__ import annotations

import numpy as np

from . import _exact as exact
from ._interop import as_numpy
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
    """The exact score (docs/precision.md, hardmine/_exact.py) of each (query row, candidate id)
    pair, gathered in chunks: the same float64 bits as the exact paths' scores of that pair."""
    scores = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _PAIR_CHUNK):
        stop = min(start + _PAIR_CHUNK, rows.shape[0])
        q = np.asarray(problem.queries.array[rows[start:stop]]).astype(np.float32).astype(np.float64)
        c = np.asarray(problem.candidates.array[ids[start:stop]]).astype(np.float32).astype(np.float64)
        dots = exact.pair_dots(q, c)
        scores[start:stop] = (exact.cosine(dots, exact.squared_norms(q), exact.squared_norms(c))
                              if problem.metric == "cosine" else dots)
    return scores


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


def label_pairs(emb_a, reference, anchor_labels, reference_labels, same: bool, metric: str,
                    dtype: type = np.float64):
    """(anchor, member, score) of every same-label pair, the diagonal left out when ``same`` (rows of
    a batch against their own labels). Rows are sorted by label once; each label's pairs are then
    one small product of two contiguous blocks, so only O(pairs) scores are computed and no row
    is gathered twice."""
    a = as_numpy(emb_a, "emb_a")  # bfloat16 too, viewed through ml_dtypes
    r = as_numpy(reference, "emb_b")
    a_order = np.argsort(anchor_labels, kind="stable")
    r_order = np.argsort(reference_labels, kind="stable")
    shared = reference is emb_a
    a_sorted = np.asarray(a[a_order], dtype=dtype)
    r_sorted = a_sorted if shared else np.asarray(r[r_order], dtype=dtype)
    if metric == "cosine":
        a_sorted = a_sorted / np.linalg.norm(a_sorted, axis=1, keepdims=True)
        r_sorted = a_sorted if shared else r_sorted / np.linalg.norm(r_sorted, axis=1, keepdims=True)
    a_labels, r_labels = anchor_labels[a_order], reference_labels[r_order]
    labels = np.intersect1d(a_labels, r_labels)
    a_start, a_stop = np.searchsorted(a_labels, labels), np.searchsorted(a_labels, labels, side="right")
    r_start, r_stop = np.searchsorted(r_labels, labels), np.searchsorted(r_labels, labels, side="right")
    blocks = [(a_sorted[a_start[i] : a_stop[i]] @ r_sorted[r_start[i] : r_stop[i]].T).ravel()
              for i in range(labels.size)]
    if not blocks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype)
    # Row-major (anchor, member) positions inside each label's block, in sorted-row numbers.
    n, m = a_stop - a_start, r_stop - r_start
    sizes = n * m
    local = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    width = np.repeat(m, sizes)
    anchors = a_order[np.repeat(a_start, sizes) + local // width]
    members = r_order[np.repeat(r_start, sizes) + local % width]
    scores = np.concatenate(blocks)
    if same:
        keep = anchors != members
        anchors, members, scores = anchors[keep], members[keep], scores[keep]
    return anchors, members, scores
