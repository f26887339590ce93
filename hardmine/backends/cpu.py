"""The ``cpu`` backend: the compiled C++ core (OpenMP workers, OpenBLAS score
tiles, fused selection)."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .. import _merge as merge
from .._draws import Rule
from .._problem import CERTIFIED, F32, HOST, Embeddings, Problem, restrict_candidates


def _load_openblas() -> None:
    # _core links libscipy_openblas.so from the scipy-openblas32 wheel; loading it
    # here by path makes the extension resolve it whatever the install layout.
    import scipy_openblas32

    path = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    if os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


_load_openblas()
try:
    from .. import _core  # must follow the BLAS preload
except ImportError as error:
    raise ImportError(
        f"the compiled core is not installed ({error}); it is built by 'pip install .' unless "
        f"SKBUILD_WHEEL_CMAKE=false was set"
    ) from error


def _storage(emb: Embeddings) -> np.ndarray:
    # Half-precision rows travel as their uint16 bit patterns; the core converts them.
    return emb.array if emb.dtype_code == F32 else emb.array.view(np.uint16)


def _common(problem: Problem) -> dict:
    return dict(
        queries=_storage(problem.queries),
        queries_dtype=problem.queries.dtype_code,
        candidates=_storage(problem.candidates),
        candidates_dtype=problem.candidates.dtype_code,
        query_scales=problem.query_scales,
        candidate_scales=problem.candidate_scales,
        query_rows=problem.block_size[0],
        candidate_rows=problem.block_size[1],
        num_threads=problem.num_threads,
    )


def _int8_common(problem: Problem) -> dict:
    """:func:`_common` for the certified (int8/bf16) paths, which size their own blocks."""
    common = _common(problem)
    del common["query_rows"], common["candidate_rows"]
    return common


def _exclusion(problem: Problem) -> dict:
    return dict(
        exclude_indptr=problem.exclude_indptr,
        exclude_indices=problem.exclude_indices,
        query_groups=problem.query_groups,
        candidate_groups=problem.candidate_groups,
    )


def _candidate_ranges(problem: Problem) -> tuple[list[tuple[int, int]], int]:
    """Contiguous candidate ranges (whole tiles) and threads per range. The core's workers
    share query blocks; when there are fewer blocks than threads (a few queries against
    many candidates), the candidates are cut so that every thread gets work."""
    num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
    threads = _core.worker_threads(problem.num_threads)
    query_rows, tile_rows = _core.block_sizes(num_queries, num_candidates, problem.queries.dim, threads)
    query_rows = problem.block_size[0] or query_rows
    tile_rows = problem.block_size[1] or tile_rows
    cuts = merge.candidate_cuts(-(-num_queries // max(query_rows, 1)), threads, num_candidates, tile_rows)
    return cuts, max(1, threads // len(cuts))


def _split(problem: Problem, run: Callable[[Problem, int], tuple], ids_at: int) -> list[tuple]:
    """run(part, first id) for each candidate range of :func:`_candidate_ranges`, concurrently
    (the core releases the GIL), with the result's ``ids_at``-th array made global ids; one
    call on the whole problem when there is one range."""
    cuts, threads = _candidate_ranges(problem)
    if len(cuts) == 1:
        return [run(problem, 0)]
    parts = []
    for c0, c1 in cuts:
        shard = Embeddings(problem.candidates.array[c0:c1], problem.candidates.dtype_code, problem.candidates.name)
        parts.append((c0, replace(restrict_candidates(problem, c0, shard), num_threads=threads)))
    with concurrent.futures.ThreadPoolExecutor(len(parts), thread_name_prefix="hardmine-cpu") as pool:
        return list(pool.map(lambda item: _global_ids(run(item[1], item[0]), item[0], ids_at), parts))


def _global_ids(result: tuple, offset: int, ids_at: int) -> tuple:
    """The part's result with its id array (position ``ids_at``) shifted by ``offset``, -1 kept."""
    ids = result[ids_at]
    shifted = np.where(ids >= 0, ids + offset, -1)
    return tuple(shifted if i == ids_at else value for i, value in enumerate(result))


def _filters(problem: Problem, counts: np.ndarray) -> dict:
    """The mining filters (keys, score bounds) and the tallies' bounds and output."""
    return dict(
        candidate_keys=problem.candidate_keys,
        excluded_key_indptr=problem.excluded_key_indptr,
        excluded_key_indices=problem.excluded_key_indices,
        upper_bounds=problem.upper_bounds,
        lower_bounds=problem.lower_bounds,
        exclusive_bounds=problem.exclusive_bounds,
        count_bounds=list(problem.count_bounds),
        count_below=list(problem.count_below),
        out_counts=counts if problem.count_bounds else None,
    )


class CpuBackend:
    name = "cpu"
    devices = frozenset({HOST})
    precisions = frozenset({"fp32", *CERTIFIED})
    build_info = dict(_core.BUILD_INFO)
    #: True when the int8 path runs its AVX-512 VNNI kernel (else a portable one)
    int8_native = _core.certified_int8_native()
    #: True when the bf16 path runs its AVX512_BF16 kernel (else a portable one)
    bf16_native = _core.certified_bf16_native()

    def tiles(self, threads: int | None) -> dict:
        """Besides the BLAS kernel, what decides the float32 scores' rounding: the worker threads a
        call gets and the candidate tile rows the core then picks (from the L2 cache size)."""
        workers = _core.worker_threads(threads or 0)
        return {"threads": workers, "tile_rows": _core.block_sizes(1024, 1 << 20, 64, workers)[1]}

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if problem.precision in CERTIFIED:
            return self.topk_certified(problem, k)[:3]
        return merge.topk(_split(problem, lambda part, _: self._topk(part, k), ids_at=0), k, problem.candidate_keys)

    def topk_certified(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indices, scores, counts, shortlist): the exact top-k through certified int8 or bf16
        scores (``problem.precision``)
        (csrc/cpu/certified.cpp), the mining window and filter tallies included; ``shortlist`` is
        the number of candidates re-scored per query, -1 where the screen could not decide the query
        (a shortlist past its cap, a zero or non-finite row, a NaN bound) and every candidate was
        scored exactly instead."""
        num_queries = problem.queries.rows
        indices = np.empty((num_queries, k), dtype=np.int64)
        scores = np.empty((num_queries, k), dtype=np.float32)
        shortlist = np.empty(num_queries, dtype=np.int64)
        counts = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        _core.topk_int8(k=k, out_indices=indices, out_scores=scores, out_shortlist=shortlist, **_int8_common(problem),
                        **_exclusion(problem), **_filters(problem, counts), codes=problem.precision)
        return indices, scores, counts, shortlist

    def sample(self, problem: Problem, count: int, rule: Rule, top_k: int = 0):
        if problem.precision in CERTIFIED:
            return self._sample_exact(problem, count, rule, top_k)

        def run(part: Problem, first: int) -> tuple:
            found = self._sample(part, count, rule._replace(first_id=rule.first_id + first), top_k)
            return (*found[:4], *_global_ids(found[4:], first, 0))

        return merge.samples(_split(problem, run, ids_at=0), count, problem.candidate_keys)

    def violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        if problem.precision in CERTIFIED:
            count, hinge_sum, best_scores, argmax = self._violations_certified(problem, positive_scores, margin)
        else:
            parts = _split(problem, lambda part, _: self._violations(part, positive_scores, margin), ids_at=3)
            count, hinge_sum, best_scores, argmax = merge.violations(parts)
        hinge = np.float32(margin) + best_scores - positive_scores  # as the core computes it
        return count, hinge_sum, np.where(argmax >= 0, np.maximum(hinge, np.float32(0)), np.float32(0)), argmax

    def _topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num_queries = problem.queries.rows
        indices = np.empty((num_queries, k), dtype=np.int64)
        scores = np.empty((num_queries, k), dtype=np.float32)
        counts = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        _core.topk(k=k, out_indices=indices, out_scores=scores, **_filters(problem, counts), **_common(problem),
                   **_exclusion(problem))
        return indices, scores, counts

    def _sample(self, problem: Problem, count: int, rule: Rule, top_k: int):
        num_queries = problem.queries.rows
        indices = np.empty((num_queries, count), dtype=np.int64)
        scores = np.empty((num_queries, count), dtype=np.float32)
        priorities = np.empty((num_queries, count), dtype=np.float64)
        counts = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        top_indices = np.empty((num_queries, top_k), dtype=np.int64)
        top_scores = np.empty((num_queries, top_k), dtype=np.float32)
        _core.sample(count=count, seed=rule.seed % 2**64, temperature=rule.temperature or 0.0,
                     first_row=rule.first_row, first_id=rule.first_id, out_indices=indices, out_scores=scores,
                     out_priorities=priorities, top_k=top_k, out_top_indices=top_indices if top_k else None,
                     out_top_scores=top_scores if top_k else None, **_filters(problem, counts), **_common(problem),
                     **_exclusion(problem))
        return indices, scores, priorities, counts, top_indices, top_scores

    def _violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        num_queries = problem.queries.rows
        count = np.empty(num_queries, dtype=np.int64)
        hinge_sum = np.empty(num_queries, dtype=np.float64)
        max_hinge = np.empty(num_queries, dtype=np.float32)
        argmax = np.empty(num_queries, dtype=np.int64)
        best_scores = np.empty(num_queries, dtype=np.float32)
        _core.violations(
            positive_scores=positive_scores,
            margin=margin,
            out_count=count,
            out_hinge_sum=hinge_sum,
            out_max=max_hinge,
            out_argmax=argmax,
            out_best_scores=best_scores,
            **_common(problem),
            **_exclusion(problem),
        )
        return count, hinge_sum, best_scores, argmax

    def _sample_exact(self, problem: Problem, count: int, rule: Rule, top_k: int):
        """:meth:`sample` with exact scores: uniform draws visit candidates by priority
        and score only those (csrc/cpu/exact_draws.cpp); softmax draws bound each priority from
        the certified screen (csrc/cpu/certified_draws.cpp); the top ``top_k`` and the filter
        tallies come from the certified top-k. A query whose window admits few candidates visits
        more of them (up to all); one whose softmax shortlist outgrows its cap scores every
        candidate exactly."""
        num_queries = problem.queries.rows
        indices = np.empty((num_queries, count), dtype=np.int64)
        scores = np.empty((num_queries, count), dtype=np.float32)
        priorities = np.empty((num_queries, count), dtype=np.float64)
        scored = np.empty(num_queries, dtype=np.int64)
        _core.draw_exact(count=count, seed=rule.seed % 2**64, temperature=rule.temperature or 0.0,
                         first_row=rule.first_row, first_id=rule.first_id, upper_bounds=problem.upper_bounds,
                         lower_bounds=problem.lower_bounds, exclusive_bounds=problem.exclusive_bounds,
                         out_indices=indices, out_scores=scores, out_priorities=priorities, out_scored=scored,
                         codes=problem.precision, candidate_keys=problem.candidate_keys,
                         excluded_key_indptr=problem.excluded_key_indptr,
                         excluded_key_indices=problem.excluded_key_indices, **_int8_common(problem),
                         **_exclusion(problem))
        if not (top_k or problem.count_bounds):  # nothing to skip or count: no screen at all
            top_indices, top_scores = np.empty((num_queries, 0), np.int64), np.empty((num_queries, 0), np.float32)
            return indices, scores, priorities, np.zeros((num_queries, 0), dtype=np.int64), top_indices, top_scores
        top_indices, top_scores, counts, _ = self.topk_certified(problem, max(top_k, 1))
        return indices, scores, priorities, counts, top_indices[:, :top_k], top_scores[:, :top_k]

    def _violations_certified(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        """(count, hinge_sum, best_scores, argmax) through certified int8 or bf16 scores: the hardest
        negative is the certified top-1 and every possible violator is re-scored exactly; a query
        with more possible violators than the shortlist cap scores every candidate exactly."""
        num_queries = problem.queries.rows
        count = np.empty(num_queries, dtype=np.int64)
        hinge_sum = np.empty(num_queries, dtype=np.float64)
        best_scores = np.empty(num_queries, dtype=np.float32)
        argmax = np.empty(num_queries, dtype=np.int64)
        shortlist = np.empty(num_queries, dtype=np.int64)
        _core.violations_int8(positive_scores=positive_scores, margin=margin, out_count=count,
                              out_hinge_sum=hinge_sum, out_best_scores=best_scores, out_argmax=argmax,
                              out_shortlist=shortlist, **_int8_common(problem), **_exclusion(problem),
                              codes=problem.precision)
        return count, hinge_sum, best_scores, argmax

    def similarity(self, problem: Problem) -> np.ndarray:
        out = np.empty((problem.queries.rows, problem.candidates.rows), dtype=np.float32)
        _core.similarity(out=out, **_common(problem))
        return out
