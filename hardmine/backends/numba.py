"""The ``numba`` backend: the fallback when the compiled core is absent.

Score tiles come from NumPy's matmul (its own multi-threaded BLAS); the
selection and violation scans over each tile run in parallel Numba kernels
with the same rules as the C++ core (reservoir with a running threshold, ties
by the smaller index, NaN never admitted), so both give the same answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numba
import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

from .._validation import Problem

# Larger tiles than the C++ core: here each tile costs a Python round trip.
_QUERY_ROWS = 1024
_CANDIDATE_ROWS = 4096

_EXCLUSION_ARGS = (
    "int64[::1], int64[::1], boolean, int64[::1], int64[::1], boolean, "
    "int64[::1], int64[::1], int64[::1], boolean"
)
_BOUNDS_ARGS = "float32[::1], boolean, float32[::1], boolean, boolean"


@numba.njit("boolean(int64[::1], int64, int64, int64)", cache=True, nogil=True)
def _sorted_contains(values, first, last, value):
    end = last
    while first < last:
        mid = (first + last) // 2
        if values[mid] < value:
            first = mid + 1
        else:
            last = mid
    return first < end and values[first] == value


@numba.njit(f"boolean(int64, int64, {_EXCLUSION_ARGS})", cache=True, nogil=True)
def _excluded(
    query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
    candidate_keys, key_indptr, key_indices, has_key_exclusion,
):
    if has_groups and candidate_groups[candidate] == query_groups[query]:
        return True
    if has_csr and _sorted_contains(indices, indptr[query], indptr[query + 1], candidate):
        return True
    return has_key_exclusion and _sorted_contains(
        key_indices, key_indptr[query], key_indptr[query + 1], candidate_keys[candidate]
    )


@numba.njit(f"boolean(int64, float32, {_BOUNDS_ARGS})", cache=True, nogil=True)
def _admits(query, score, upper, has_upper, lower, has_lower, exclusive):
    if has_upper and not (score < upper[query] if exclusive else score <= upper[query]):
        return False
    if has_lower and not (score > lower[query] if exclusive else score >= lower[query]):
        return False
    return True


@numba.njit("int64[::1](float32[::1], int64[::1])", cache=True, nogil=True)
def _better_order(scores, ids):
    """Permutation ordering entries by score descending, then id ascending."""
    by_id = np.argsort(ids, kind="mergesort")
    return by_id[np.argsort(-scores[by_id], kind="mergesort")]


@numba.njit("int64(float32[::1], int64[::1], int64, int64[::1], boolean)", cache=True, nogil=True)
def _sort_distinct(scores, ids, count, candidate_keys, has_keys):
    """Sorts scores[:count]/ids[:count] best first, keeping the best entry per key
    when keys are given; returns the new count."""
    order = _better_order(scores[:count], ids[:count])
    sorted_scores = scores[:count][order]
    sorted_ids = ids[:count][order]
    out = 0
    if has_keys:
        # Stable by key keeps each key's entries best first; the first one wins.
        by_key = np.argsort(candidate_keys[sorted_ids], kind="mergesort")
        keep = np.zeros(count, dtype=np.bool_)
        for r in range(count):
            if r == 0 or candidate_keys[sorted_ids[by_key[r]]] != candidate_keys[sorted_ids[by_key[r - 1]]]:
                keep[by_key[r]] = True
        for r in range(count):
            if keep[r]:
                scores[out] = sorted_scores[r]
                ids[out] = sorted_ids[r]
                out += 1
        return out
    scores[:count] = sorted_scores
    ids[:count] = sorted_ids
    return count


_TOPK_CONSUME_ARGS = (
    f"float32[:, ::1], int64, int64, float32[:, ::1], int64[:, ::1], int64[::1], float32[::1], int64, "
    f"{_EXCLUSION_ARGS}, boolean, {_BOUNDS_ARGS}"
)
_TOPK_FINISH_ARGS = (
    "float32[:, ::1], int64[:, ::1], int64[::1], int64, float32[:, ::1], int64[:, ::1], int64[::1], boolean"
)
_VIOLATIONS_ARGS = (
    f"float32[:, ::1], int64, int64, float32[::1], float32, int64[::1], float64[::1], float32[::1], "
    f"int64[::1], {_EXCLUSION_ARGS}"
)


@numba.njit(f"void(int64, {_TOPK_CONSUME_ARGS})", cache=True, nogil=True)
def _topk_consume_row(
    row, scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept,
    indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
    candidate_keys, key_indptr, key_indices, has_key_exclusion, has_keys,
    upper, has_upper, lower, has_lower, exclusive,
):
    capacity = kept_scores.shape[1]
    query = q0 + row
    count = counts[row]
    threshold = thresholds[row]
    for j in range(scores.shape[1]):
        s = scores[row, j]
        if not s > threshold:
            continue
        if not _admits(query, s, upper, has_upper, lower, has_lower, exclusive):
            continue
        candidate = c0 + j
        if _excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                     candidate_keys, key_indptr, key_indices, has_key_exclusion):
            continue
        kept_scores[row, count] = s
        kept_ids[row, count] = candidate
        count += 1
        if count == capacity and capacity > kept:
            count = _sort_distinct(kept_scores[row], kept_ids[row], count, candidate_keys, has_keys)
            if count >= kept:
                count = kept
                threshold = kept_scores[row, kept - 1]
    counts[row] = count
    thresholds[row] = threshold


@numba.njit(f"void(int64, {_TOPK_FINISH_ARGS})", cache=True, nogil=True)
def _topk_finish_row(row, kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys):
    count = _sort_distinct(kept_scores[row], kept_ids[row], counts[row], candidate_keys, has_keys)
    take = min(count, kept)
    for r in range(take):
        out_scores[row, r] = kept_scores[row, r]
        out_ids[row, r] = kept_ids[row, r]
    for r in range(take, out_scores.shape[1]):
        out_scores[row, r] = -np.inf
        out_ids[row, r] = -1


@numba.njit(f"void(int64, {_VIOLATIONS_ARGS})", cache=True, nogil=True)
def _violations_row(
    row, scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids,
    indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
    candidate_keys, key_indptr, key_indices, has_key_exclusion,
):
    query = q0 + row
    positive = positive_scores[query]
    threshold = np.float32(positive - margin)
    best = best_scores[row]
    best_id = best_ids[row]
    count = 0
    hinge = 0.0
    for j in range(scores.shape[1]):
        s = scores[row, j]
        if not (s > threshold) and not (s > best):
            continue
        candidate = c0 + j
        if _excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                     candidate_keys, key_indptr, key_indices, has_key_exclusion):
            continue
        if s > threshold:
            count += 1
            hinge += np.float64(margin) + np.float64(s) - np.float64(positive)
        if s > best:
            best = s
            best_id = candidate
    counts[row] += count
    hinge_sums[row] += hinge
    best_scores[row] = best
    best_ids[row] = best_id


# Each row kernel has a parallel driver and a serial one: Numba's GNU OpenMP layer
# aborts a forked child that enters a parallel region, so such a child takes the
# serial drivers (numba caches by function, so the two must be distinct functions).
@numba.njit(f"void({_TOPK_CONSUME_ARGS})", parallel=True, cache=True, nogil=True)
def _topk_consume_parallel(
    scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, indptr, indices, has_csr, query_groups,
    candidate_groups, has_groups, candidate_keys, key_indptr, key_indices, has_key_exclusion, has_keys, upper,
    has_upper, lower, has_lower, exclusive,
):
    for row in prange(scores.shape[0]):
        _topk_consume_row(
            row, scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, indptr, indices, has_csr,
            query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices,
            has_key_exclusion, has_keys, upper, has_upper, lower, has_lower, exclusive,
        )


@numba.njit(f"void({_TOPK_CONSUME_ARGS})", cache=True, nogil=True)
def _topk_consume_serial(
    scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, indptr, indices, has_csr, query_groups,
    candidate_groups, has_groups, candidate_keys, key_indptr, key_indices, has_key_exclusion, has_keys, upper,
    has_upper, lower, has_lower, exclusive,
):
    for row in range(scores.shape[0]):
        _topk_consume_row(
            row, scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, indptr, indices, has_csr,
            query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices,
            has_key_exclusion, has_keys, upper, has_upper, lower, has_lower, exclusive,
        )


@numba.njit(f"void({_TOPK_FINISH_ARGS})", parallel=True, cache=True, nogil=True)
def _topk_finish_parallel(
    kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys,
):
    for row in prange(kept_scores.shape[0]):
        _topk_finish_row(
            row, kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys,
        )


@numba.njit(f"void({_TOPK_FINISH_ARGS})", cache=True, nogil=True)
def _topk_finish_serial(
    kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys,
):
    for row in range(kept_scores.shape[0]):
        _topk_finish_row(
            row, kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys,
        )


@numba.njit(f"void({_VIOLATIONS_ARGS})", parallel=True, cache=True, nogil=True)
def _violations_parallel(
    scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, indptr, indices,
    has_csr, query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices,
    has_key_exclusion,
):
    for row in prange(scores.shape[0]):
        _violations_row(
            row, scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, indptr,
            indices, has_csr, query_groups, candidate_groups, has_groups, candidate_keys, key_indptr,
            key_indices, has_key_exclusion,
        )


@numba.njit(f"void({_VIOLATIONS_ARGS})", cache=True, nogil=True)
def _violations_serial(
    scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, indptr, indices,
    has_csr, query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices,
    has_key_exclusion,
):
    for row in range(scores.shape[0]):
        _violations_row(
            row, scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, indptr,
            indices, has_csr, query_groups, candidate_groups, has_groups, candidate_keys, key_indptr,
            key_indices, has_key_exclusion,
        )


def _parallel_layer_was_started() -> bool:
    try:
        numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process yet
        return False
    return True


#: set in a child forked after Numba started its thread pool (see the serial drivers)
_forked_after_parallel = False


def _after_fork_in_child() -> None:
    global _forked_after_parallel
    _forked_after_parallel = _forked_after_parallel or _parallel_layer_was_started()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _kernels() -> tuple:
    """(consume, finish, violations) drivers for this process."""
    if _forked_after_parallel:
        return _topk_consume_serial, _topk_finish_serial, _violations_serial
    return _topk_consume_parallel, _topk_finish_parallel, _violations_parallel


def _exclusion_args(problem: Problem) -> tuple:
    empty = np.zeros(1, dtype=np.int64)

    def given(array):
        return array if array is not None and array.size else empty

    return (
        given(problem.exclude_indptr),
        given(problem.exclude_indices),
        problem.exclude_indptr is not None,
        given(problem.query_groups),
        given(problem.candidate_groups),
        problem.query_groups is not None,
        given(problem.candidate_keys),
        given(problem.excluded_key_indptr),
        given(problem.excluded_key_indices),
        problem.excluded_key_indptr is not None,
    )


def _bounds_args(problem: Problem) -> tuple:
    empty = np.zeros(1, dtype=np.float32)
    return (
        problem.upper_bounds if problem.upper_bounds is not None else empty,
        problem.upper_bounds is not None,
        problem.lower_bounds if problem.lower_bounds is not None else empty,
        problem.lower_bounds is not None,
        problem.exclusive_bounds,
    )


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    """Limits Numba's and NumPy's BLAS threads for one call, restoring both after."""
    if count <= 0:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=count, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)


def _tiles(problem: Problem) -> Iterator[tuple[int, int, Iterator[tuple[int, np.ndarray]]]]:
    """Yields (q0, rows, tiles) per query block; tiles yields (c0, score tile)."""
    query_rows = problem.block_size[0] or _QUERY_ROWS
    candidate_rows = problem.block_size[1] or _CANDIDATE_ROWS
    cosine = problem.metric == "cosine"

    def candidate_tiles(queries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        for c0 in range(0, problem.candidates.rows, candidate_rows):
            c1 = min(c0 + candidate_rows, problem.candidates.rows)
            tile = queries @ problem.candidates.rows_f32(c0, c1, copy=False).T
            if cosine:
                tile *= problem.candidate_scales[None, c0:c1]
            yield c0, tile

    for q0 in range(0, problem.queries.rows, query_rows):
        q1 = min(q0 + query_rows, problem.queries.rows)
        queries = problem.queries.rows_f32(q0, q1)
        if cosine:
            queries *= problem.query_scales[q0:q1, None]
        yield q0, q1 - q0, candidate_tiles(queries)


def _tally(tile: np.ndarray, problem: Problem, q0: int, tallies: np.ndarray) -> None:
    """Adds each filter's count of scores beyond its bound (vectorised NumPy compares)."""
    rows = slice(q0, q0 + tile.shape[0])
    for f, (bound, below) in enumerate(zip(problem.count_bounds, problem.count_below)):
        edge = bound[rows, None]
        beyond = (tile < edge) & (tile > -np.inf) if below else tile > edge
        tallies[rows, f] += beyond.sum(axis=1)


class NumbaBackend:
    name = "numba"

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
        tallies = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        kept = min(k, num_candidates)
        capacity = max(1, min(num_candidates, max(2 * kept, kept + 16)))
        indices = np.empty((num_queries, k), dtype=np.int64)
        scores = np.empty((num_queries, k), dtype=np.float32)
        exclusion = _exclusion_args(problem)
        bounds = _bounds_args(problem)
        has_keys = problem.candidate_keys is not None
        keys = exclusion[6]
        consume, finish, _ = _kernels()
        with _threads(problem.num_threads):
            for q0, rows, tiles in _tiles(problem):
                kept_scores = np.empty((rows, capacity), dtype=np.float32)
                kept_ids = np.empty((rows, capacity), dtype=np.int64)
                counts = np.zeros(rows, dtype=np.int64)
                thresholds = np.full(rows, -np.inf, dtype=np.float32)
                for c0, tile in tiles:
                    consume(
                        tile, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, *exclusion, has_keys, *bounds
                    )
                    _tally(tile, problem, q0, tallies)
                finish(
                    kept_scores, kept_ids, counts, kept, scores[q0 : q0 + rows], indices[q0 : q0 + rows], keys, has_keys
                )
        return indices, scores, tallies

    def violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        num_queries = problem.queries.rows
        count = np.zeros(num_queries, dtype=np.int64)
        hinge_sum = np.zeros(num_queries, dtype=np.float64)
        best_scores = np.full(num_queries, -np.inf, dtype=np.float32)
        argmax = np.full(num_queries, -1, dtype=np.int64)
        exclusion = _exclusion_args(problem)
        scan = _kernels()[2]
        with _threads(problem.num_threads):
            for q0, rows, tiles in _tiles(problem):
                block = slice(q0, q0 + rows)
                for c0, tile in tiles:
                    scan(
                        tile, q0, c0, positive_scores, np.float32(margin), count[block], hinge_sum[block],
                        best_scores[block], argmax[block], *exclusion,
                    )
        hinge = np.float32(margin) + best_scores - positive_scores
        max_hinge = np.where(argmax >= 0, np.maximum(hinge, np.float32(0)), np.float32(0)).astype(np.float32)
        return count, hinge_sum, max_hinge, argmax

    def similarity(self, problem: Problem) -> np.ndarray:
        out = np.empty((problem.queries.rows, problem.candidates.rows), dtype=np.float32)
        with _threads(problem.num_threads):
            for q0, rows, tiles in _tiles(problem):
                for c0, tile in tiles:
                    out[q0 : q0 + rows, c0 : c0 + tile.shape[1]] = tile
        return out
