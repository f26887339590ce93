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
import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import NamedTuple

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .. import _merge as merge
from . import numba_kernels as kernels
from . import numba_sampler as sampler
from .._draws import Rule
from .._problem import F16, HOST, Problem

# Larger tiles than the C++ core: here each tile costs a Python round trip.
_QUERY_ROWS = 1024
_CANDIDATE_ROWS = 4096


def _candidate_rows(problem: Problem, c0: int, c1: int, buffer: list) -> np.ndarray:
    """Candidate rows [c0, c1) as float32 for reading: fp16 rows converted by
    :func:`_halves_to_float32` into the worker's reusable ``buffer``, others as the core reads them."""
    rows = problem.candidates.array[c0:c1] if problem.candidates.dtype_code == F16 else None
    if rows is None or not isinstance(rows, np.ndarray) or not rows.flags.c_contiguous:
        return problem.candidates.rows_f32(c0, c1, copy=False)
    if not buffer or buffer[0].shape[0] < rows.shape[0]:
        buffer[:] = [np.empty(rows.shape, dtype=np.float32)]
    out = buffer[0][: rows.shape[0]]
    kernels.halves_to_float32(rows.view(np.uint16), out)
    return out


class _Exclusion(NamedTuple):
    """The kernels' exclusion arguments, in their order (absent arrays as a 1-element stand-in)."""

    indptr: np.ndarray
    indices: np.ndarray
    has_csr: bool
    query_groups: np.ndarray
    candidate_groups: np.ndarray
    has_groups: bool
    candidate_keys: np.ndarray
    key_indptr: np.ndarray
    key_indices: np.ndarray
    has_key_exclusion: bool


def _exclusion_args(problem: Problem) -> _Exclusion:
    empty = np.zeros(1, dtype=np.int64)

    def given(array):
        return array if array is not None and array.size else empty

    return _Exclusion(
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
    cuts = merge.candidate_cuts(len(blocks), wanted, num_candidates, tile_rows)
    items = [_WorkItem(q0, q1, c0, c1) for q0, q1 in blocks for c0, c1 in cuts]
    return items, max(1, min(wanted, len(items)))


_blas_lock = threading.Lock()
_blas_held = False


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS held at one thread while this backend's workers run (each worker is a thread of
    its own). The limit is process-wide and threadpoolctl lets only the thread that set it
    restore it, so only a call that finds no other call of this backend running sets it
    (and restores it itself); calls that overlap it run with whatever BLAS has meanwhile."""
    global _blas_held
    with _blas_lock:
        owner, _blas_held = not _blas_held, True
    if not owner:
        yield
        return
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        with _blas_lock:
            _blas_held = False


def _run(work, items: list[_WorkItem], workers: int) -> list:
    """work(item) for every item on ``workers`` threads, BLAS single-threaded meanwhile;
    results in item order. The first error (Ctrl-C included) stops the items not yet started."""
    with _single_threaded_blas():
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
    devices = frozenset({HOST})
    precisions = frozenset({"fp32"})

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
        kept = min(k, num_candidates)
        capacity = max(1, min(num_candidates, max(2 * kept, kept + 16)))
        exclusion = _exclusion_args(problem)
        bounds = _bounds_args(problem)
        has_keys = problem.candidate_keys is not None
        keys = exclusion.candidate_keys

        def work(item: _WorkItem):
            rows = item.q1 - item.q0
            kept_scores = np.empty((rows, capacity), dtype=np.float32)
            kept_ids = np.empty((rows, capacity), dtype=np.int64)
            counts = np.zeros(rows, dtype=np.int64)
            thresholds = np.full(rows, -np.inf, dtype=np.float32)
            tallies = np.zeros((rows, len(problem.count_bounds)), dtype=np.int64)
            for c0, tile in _tiles(problem, item, _query_rows(problem, item)):
                kernels.topk_consume(tile, item.q0, c0, kept_scores, kept_ids, counts, thresholds, kept, *exclusion,
                              has_keys, *bounds)
                _tally(tile, problem, item.q0, tallies)
            scores = np.empty((rows, k), dtype=np.float32)
            indices = np.empty((rows, k), dtype=np.int64)
            kernels.topk_finish(kept_scores, kept_ids, counts, kept, scores, indices, keys, has_keys)
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

    def sample(self, problem: Problem, count: int, rule: Rule, top_k: int = 0):
        num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
        exclusion = _exclusion_args(problem)
        bounds = _bounds_args(problem)
        has_keys = problem.candidate_keys is not None
        seed, temperature = np.uint64(rule.seed % 2**64), float(rule.temperature or 0.0)
        kept = min(top_k, num_candidates)
        capacity = max(1, min(num_candidates, max(2 * kept, kept + 16)))

        def work(item: _WorkItem):
            rows = item.q1 - item.q0
            heap_p = np.empty((rows, count), dtype=np.float64)
            heap_s = np.empty((rows, count), dtype=np.float32)
            heap_ids = np.empty((rows, count), dtype=np.int64)
            heap_keys = np.empty((rows, count), dtype=np.int64)
            sizes = np.zeros(rows, dtype=np.int64)
            tallies = np.zeros((rows, len(problem.count_bounds)), dtype=np.int64)
            # the top ranks of the same tiles (a window from rank a > 0): the top-k reservoir
            kept_scores = np.empty((rows, capacity), dtype=np.float32)
            kept_ids = np.empty((rows, capacity), dtype=np.int64)
            counts = np.zeros(rows, dtype=np.int64)
            thresholds = np.full(rows, -np.inf, dtype=np.float32)
            for c0, tile in _tiles(problem, item, _query_rows(problem, item)):
                if top_k:
                    kernels.topk_consume(tile, item.q0, c0, kept_scores, kept_ids, counts, thresholds, kept,
                                         *exclusion, has_keys, *bounds)
                sampler.sample_consume(tile, item.q0, c0, heap_p, heap_s, heap_ids, heap_keys, sizes, seed,
                                       temperature, rule.first_row, rule.first_id, *exclusion, has_keys, *bounds)
                _tally(tile, problem, item.q0, tallies)
            sampler.sample_finish(heap_p, heap_s, heap_ids, sizes)
            top_scores = np.empty((rows, top_k), dtype=np.float32)
            top_ids = np.empty((rows, top_k), dtype=np.int64)
            if top_k:
                kernels.topk_finish(kept_scores, kept_ids, counts, kept, top_scores, top_ids, exclusion.candidate_keys,
                                    has_keys)
            return heap_ids, heap_s, heap_p, tallies, top_ids, top_scores

        items, workers = _plan(problem)
        results = _run(work, items, workers)
        dtypes = (np.int64, np.float32, np.float64, np.int64, np.int64, np.float32)
        widths = (count, count, count, len(problem.count_bounds), top_k, top_k)
        merged = [np.empty((num_queries, width), dtype=dtype) for width, dtype in zip(widths, dtypes)]
        for q0 in sorted({item.q0 for item in items}):
            parts = [result for item, result in zip(items, results) if item.q0 == q0]
            block = slice(q0, q0 + parts[0][0].shape[0])
            for array, value in zip(merged, merge.samples(parts, count, problem.candidate_keys)):
                array[block] = value
        return tuple(merged)

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
                kernels.violations_consume(tile, item.q0, c0, positive_scores, np.float32(margin), count, hinge_sum,
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
