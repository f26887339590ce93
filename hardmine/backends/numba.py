"""The ``numba`` backend: the fallback when the compiled core is absent.

Score tiles come from NumPy's matmul (single-threaded BLAS) and the selection and
violation scans over each tile from Numba kernels, with the same rules as the C++
core (reservoir with a running threshold, ties by the smaller index, NaN never
admitted), so both give the same answers. Python threads share the work as the
C++ core's workers do: by query block, or by candidate range when queries are few
(kernels and matmul release the GIL).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from collections.abc import Iterator

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .. import _merge as merge
from .._validation import F16, Problem

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


# The tile kernels walk every row of a tile on the calling thread: the backend's
# parallelism comes from Python threads over (query block, candidate range) work
# items with single-threaded BLAS, as in the C++ core. Numba's own thread pool is
# left alone: its spinning workers fought BLAS's for the cores (3-7x slower on 2
# cores), and its GNU OpenMP layer aborts a process forked after using it.
@numba.njit(f"void({_TOPK_CONSUME_ARGS})", cache=True, nogil=True)
def _topk_consume(
    scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, indptr, indices, has_csr, query_groups,
    candidate_groups, has_groups, candidate_keys, key_indptr, key_indices, has_key_exclusion, has_keys, upper,
    has_upper, lower, has_lower, exclusive,
):
    for row in range(scores.shape[0]):
        _topk_consume_row(
            row, scores, q0, c0, kept_scores, kept_ids, counts, thresholds, kept, indptr, indices, has_csr,
            query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices, has_key_exclusion,
            has_keys, upper, has_upper, lower, has_lower, exclusive,
        )


@numba.njit(f"void({_TOPK_FINISH_ARGS})", cache=True, nogil=True)
def _topk_finish(kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys):
    for row in range(kept_scores.shape[0]):
        _topk_finish_row(row, kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys)


@numba.njit(f"void({_VIOLATIONS_ARGS})", cache=True, nogil=True)
def _violations_consume(
    scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, indptr, indices, has_csr,
    query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices, has_key_exclusion,
):
    for row in range(scores.shape[0]):
        _violations_row(
            row, scores, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, indptr,
            indices, has_csr, query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices,
            has_key_exclusion,
        )


_HALF_ROWS = numba.types.Array(numba.uint16, 2, "C", readonly=True)
_FLOAT_ROWS = numba.types.Array(numba.float32, 2, "C")


@numba.njit([numba.void(_HALF_ROWS, _FLOAT_ROWS), numba.void(_HALF_ROWS.copy(readonly=False), _FLOAT_ROWS)],
            cache=True, nogil=True)
def _halves_to_float32(bits, out):
    """IEEE half bit patterns to float32, exactly (every one of the 65536 patterns is tested).

    The magnitude bits shifted into float32 position read as a float 2**112 too small, for
    normal and subnormal halves alike, so one exact multiply fixes them; inf/NaN get the
    float32 all-ones exponent; the sign is copied. Plain loops that vectorise: about 7x
    faster than NumPy's cast, which was most of a few-query scan over an fp16 dump.
    """
    raw = out.view(np.uint32)
    for i in range(bits.shape[0]):
        for j in range(bits.shape[1]):
            raw[i, j] = (np.uint32(bits[i, j]) & np.uint32(0x7FFF)) << np.uint32(13)
        for j in range(bits.shape[1]):
            out[i, j] *= np.float32(2.0**112)
        for j in range(bits.shape[1]):
            half = np.uint32(bits[i, j])
            value = raw[i, j]
            if (half & np.uint32(0x7C00)) == np.uint32(0x7C00):
                value |= np.uint32(0x7F800000)
            raw[i, j] = value | ((half & np.uint32(0x8000)) << np.uint32(16))


def _candidate_rows(problem: Problem, c0: int, c1: int, buffer: list) -> np.ndarray:
    """Candidate rows [c0, c1) as float32 for reading: fp16 rows converted by
    :func:`_halves_to_float32` into the worker's reusable ``buffer``, others as the core reads them."""
    rows = problem.candidates.array[c0:c1] if problem.candidates.dtype_code == F16 else None
    if rows is None or not isinstance(rows, np.ndarray) or not rows.flags.c_contiguous:
        return problem.candidates.rows_f32(c0, c1, copy=False)
    if not buffer or buffer[0].shape[0] < rows.shape[0]:
        buffer[:] = [np.empty(rows.shape, dtype=np.float32)]
    out = buffer[0][: rows.shape[0]]
    _halves_to_float32(rows.view(np.uint16), out)
    return out


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



@dataclasses.dataclass(frozen=True)
class _WorkItem:
    """Query rows [q0, q1) against candidate rows [c0, c1)."""

    q0: int
    q1: int
    c0: int
    c1: int


def _plan(problem: Problem) -> tuple[list[_WorkItem], int]:
    """Work items and worker count: whole query blocks when there are enough to share, else
    each block's candidates cut into contiguous ranges (whole tiles), so that a few queries
    against many candidates still use every worker."""
    query_rows = problem.block_size[0] or _QUERY_ROWS
    tile_rows = problem.block_size[1] or _CANDIDATE_ROWS
    num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
    blocks = [(q0, min(q0 + query_rows, num_queries)) for q0 in range(0, num_queries, query_rows)]
    wanted = problem.num_threads or numba.config.NUMBA_NUM_THREADS
    tiles = max(1, -(-num_candidates // tile_rows))
    ranges = max(1, min(tiles, -(-wanted // max(len(blocks), 1))))
    per_range = -(-tiles // ranges) * tile_rows
    cuts = [(c0, min(c0 + per_range, num_candidates)) for c0 in range(0, max(num_candidates, 1), per_range)]
    items = [_WorkItem(q0, q1, c0, c1) for q0, q1 in blocks for c0, c1 in cuts]
    return items, max(1, min(wanted, len(items)))


def _run(work, items: list[_WorkItem], workers: int) -> list:
    """work(item) for every item on ``workers`` threads, BLAS single-threaded meanwhile;
    results in item order. The first error (Ctrl-C included) stops the items not yet started."""
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            return [work(item) for item in items]
        stop = threading.Event()

        def guarded(item):
            return None if stop.is_set() else work(item)

        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="hardmine-numba") as pool:
            futures = [pool.submit(guarded, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise


def _tiles(problem: Problem, item: _WorkItem, queries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(c0, score tile) over the item's candidate range; ``queries`` are its rows as float32,
    already scaled under cosine."""
    tile_rows = problem.block_size[1] or _CANDIDATE_ROWS
    buffer: list = []
    for c0 in range(item.c0, item.c1, tile_rows):
        c1 = min(c0 + tile_rows, item.c1)
        tile = queries @ _candidate_rows(problem, c0, c1, buffer).T
        if problem.metric == "cosine":
            tile *= problem.candidate_scales[None, c0:c1]
        yield c0, tile


def _query_rows(problem: Problem, item: _WorkItem) -> np.ndarray:
    queries = problem.queries.rows_f32(item.q0, item.q1)
    if problem.metric == "cosine":
        queries *= problem.query_scales[item.q0 : item.q1, None]
    return queries


def _tally(tile: np.ndarray, problem: Problem, q0: int, tallies: np.ndarray) -> None:
    """Adds each filter's count of scores beyond its bound (vectorised NumPy compares)."""
    rows = slice(q0, q0 + tile.shape[0])
    for f, (bound, below) in enumerate(zip(problem.count_bounds, problem.count_below)):
        edge = bound[rows, None]
        beyond = (tile < edge) & (tile > -np.inf) if below else tile > edge
        tallies[:, f] += beyond.sum(axis=1)


class NumbaBackend:
    name = "numba"

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
        kept = min(k, num_candidates)
        capacity = max(1, min(num_candidates, max(2 * kept, kept + 16)))
        exclusion = _exclusion_args(problem)
        bounds = _bounds_args(problem)
        has_keys = problem.candidate_keys is not None
        keys = exclusion[6]

        def work(item: _WorkItem):
            rows = item.q1 - item.q0
            kept_scores = np.empty((rows, capacity), dtype=np.float32)
            kept_ids = np.empty((rows, capacity), dtype=np.int64)
            counts = np.zeros(rows, dtype=np.int64)
            thresholds = np.full(rows, -np.inf, dtype=np.float32)
            tallies = np.zeros((rows, len(problem.count_bounds)), dtype=np.int64)
            for c0, tile in _tiles(problem, item, _query_rows(problem, item)):
                _topk_consume(tile, item.q0, c0, kept_scores, kept_ids, counts, thresholds, kept, *exclusion,
                              has_keys, *bounds)
                _tally(tile, problem, item.q0, tallies)
            scores = np.empty((rows, k), dtype=np.float32)
            indices = np.empty((rows, k), dtype=np.int64)
            _topk_finish(kept_scores, kept_ids, counts, kept, scores, indices, keys, has_keys)
            return indices, scores, tallies

        items, workers = _plan(problem)
        indices = np.empty((num_queries, k), dtype=np.int64)
        scores = np.empty((num_queries, k), dtype=np.float32)
        tallies = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        results = _run(work, items, workers)
        for q0 in sorted({item.q0 for item in items}):
            parts = [result for item, result in zip(items, results) if item.q0 == q0]
            block = slice(q0, q0 + parts[0][0].shape[0])
            indices[block], scores[block], tallies[block] = merge.topk(parts, k, problem.candidate_keys)
        return indices, scores, tallies

    def violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        num_queries = problem.queries.rows
        exclusion = _exclusion_args(problem)

        def work(item: _WorkItem):
            rows = item.q1 - item.q0
            count = np.zeros(rows, dtype=np.int64)
            hinge_sum = np.zeros(rows, dtype=np.float64)
            best_scores = np.full(rows, -np.inf, dtype=np.float32)
            best_ids = np.full(rows, -1, dtype=np.int64)
            for c0, tile in _tiles(problem, item, _query_rows(problem, item)):
                _violations_consume(tile, item.q0, c0, positive_scores, np.float32(margin), count, hinge_sum,
                                    best_scores, best_ids, *exclusion)
            return count, hinge_sum, best_scores, best_ids

        items, workers = _plan(problem)
        results = _run(work, items, workers)
        count = np.empty(num_queries, dtype=np.int64)
        hinge_sum = np.empty(num_queries, dtype=np.float64)
        best_scores = np.empty(num_queries, dtype=np.float32)
        argmax = np.empty(num_queries, dtype=np.int64)
        for q0 in sorted({item.q0 for item in items}):
            parts = [result for item, result in zip(items, results) if item.q0 == q0]  # in candidate order
            block = slice(q0, q0 + parts[0][0].shape[0])
            count[block], hinge_sum[block], best_scores[block], argmax[block] = merge.violations(parts)
        hinge = np.float32(margin) + best_scores - positive_scores
        max_hinge = np.where(argmax >= 0, np.maximum(hinge, np.float32(0)), np.float32(0)).astype(np.float32)
        return count, hinge_sum, max_hinge, argmax

    def similarity(self, problem: Problem) -> np.ndarray:
        out = np.empty((problem.queries.rows, problem.candidates.rows), dtype=np.float32)

        def work(item: _WorkItem):
            for c0, tile in _tiles(problem, item, _query_rows(problem, item)):
                out[item.q0 : item.q1, c0 : c0 + tile.shape[1]] = tile

        items, workers = _plan(problem)
        _run(work, items, workers)
        return out
