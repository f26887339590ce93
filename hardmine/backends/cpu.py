"""The ``cpu`` backend: the compiled C++ core (OpenMP workers, OpenBLAS score
tiles, fused selection)."""

from __future__ import annotations

import ctypes
import os

import numpy as np

from .._validation import F32, Embeddings, Problem


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


def _exclusion(problem: Problem) -> dict:
    return dict(
        exclude_indptr=problem.exclude_indptr,
        exclude_indices=problem.exclude_indices,
        query_groups=problem.query_groups,
        candidate_groups=problem.candidate_groups,
    )


class CpuBackend:
    name = "cpu"
    build_info = dict(_core.BUILD_INFO)

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num_queries = problem.queries.rows
        indices = np.empty((num_queries, k), dtype=np.int64)
        scores = np.empty((num_queries, k), dtype=np.float32)
        counts = np.zeros((num_queries, len(problem.count_bounds)), dtype=np.int64)
        _core.topk(
            k=k,
            out_indices=indices,
            out_scores=scores,
            candidate_keys=problem.candidate_keys,
            excluded_key_indptr=problem.excluded_key_indptr,
            excluded_key_indices=problem.excluded_key_indices,
            upper_bounds=problem.upper_bounds,
            lower_bounds=problem.lower_bounds,
            exclusive_bounds=problem.exclusive_bounds,
            count_bounds=list(problem.count_bounds),
            count_below=list(problem.count_below),
            out_counts=counts if problem.count_bounds else None,
            **_common(problem),
            **_exclusion(problem),
        )
        return indices, scores, counts

    def violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        num_queries = problem.queries.rows
        count = np.empty(num_queries, dtype=np.int64)
        hinge_sum = np.empty(num_queries, dtype=np.float64)
        max_hinge = np.empty(num_queries, dtype=np.float32)
        argmax = np.empty(num_queries, dtype=np.int64)
        _core.violations(
            positive_scores=positive_scores,
            margin=margin,
            out_count=count,
            out_hinge_sum=hinge_sum,
            out_max=max_hinge,
            out_argmax=argmax,
            **_common(problem),
            **_exclusion(problem),
        )
        return count, hinge_sum, max_hinge, argmax

    def similarity(self, problem: Problem) -> np.ndarray:
        out = np.empty((problem.queries.rows, problem.candidates.rows), dtype=np.float32)
        _core.similarity(out=out, **_common(problem))
        return out
