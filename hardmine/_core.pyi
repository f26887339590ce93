from typing import Any

import numpy as np
import numpy.typing as npt

BUILD_INFO: dict[str, Any]

def topk(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int, k: int,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    exclude_indptr: npt.NDArray[np.int64] | None, exclude_indices: npt.NDArray[np.int64] | None,
    query_groups: npt.NDArray[np.int64] | None, candidate_groups: npt.NDArray[np.int64] | None,
    out_indices: npt.NDArray[np.int64], out_scores: npt.NDArray[np.float32],
    query_rows: int = 0, candidate_rows: int = 0, num_threads: int = 0,
) -> None: ...
def violations(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int,
    positive_scores: npt.NDArray[np.float32], margin: float,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    exclude_indptr: npt.NDArray[np.int64] | None, exclude_indices: npt.NDArray[np.int64] | None,
    query_groups: npt.NDArray[np.int64] | None, candidate_groups: npt.NDArray[np.int64] | None,
    out_count: npt.NDArray[np.int64], out_hinge_sum: npt.NDArray[np.float64],
    out_max: npt.NDArray[np.float32], out_argmax: npt.NDArray[np.int64],
    query_rows: int = 0, candidate_rows: int = 0, num_threads: int = 0,
    out_best_scores: npt.NDArray[np.float32] | None = None,
) -> None: ...
def similarity(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32], query_rows: int = 0, candidate_rows: int = 0, num_threads: int = 0,
) -> None: ...
def topk_int8(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int, k: int,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    exclude_indptr: npt.NDArray[np.int64] | None, exclude_indices: npt.NDArray[np.int64] | None,
    query_groups: npt.NDArray[np.int64] | None, candidate_groups: npt.NDArray[np.int64] | None,
    out_indices: npt.NDArray[np.int64], out_scores: npt.NDArray[np.float32], out_shortlist: npt.NDArray[np.int64],
    num_threads: int = 0, upper_bounds: npt.NDArray[np.float32] | None = None,
    lower_bounds: npt.NDArray[np.float32] | None = None, exclusive_bounds: bool = False,
    count_bounds: list[npt.NDArray[np.float32]] = ..., count_below: list[bool] = ...,
    out_counts: npt.NDArray[np.int64] | None = None, candidate_keys: npt.NDArray[np.int64] | None = None,
    excluded_key_indptr: npt.NDArray[np.int64] | None = None,
    excluded_key_indices: npt.NDArray[np.int64] | None = None, codes: str = "int8",
) -> None: ...
def violations_int8(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int,
    positive_scores: npt.NDArray[np.float32], margin: float,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    exclude_indptr: npt.NDArray[np.int64] | None, exclude_indices: npt.NDArray[np.int64] | None,
    query_groups: npt.NDArray[np.int64] | None, candidate_groups: npt.NDArray[np.int64] | None,
    out_count: npt.NDArray[np.int64], out_hinge_sum: npt.NDArray[np.float64],
    out_best_scores: npt.NDArray[np.float32], out_argmax: npt.NDArray[np.int64],
    out_shortlist: npt.NDArray[np.int64], num_threads: int = 0, codes: str = "int8",
) -> None: ...
def draw_exact(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int,
    count: int, seed: int, temperature: float, first_row: int, first_id: int,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    exclude_indptr: npt.NDArray[np.int64] | None, exclude_indices: npt.NDArray[np.int64] | None,
    query_groups: npt.NDArray[np.int64] | None, candidate_groups: npt.NDArray[np.int64] | None,
    upper_bounds: npt.NDArray[np.float32] | None, lower_bounds: npt.NDArray[np.float32] | None,
    exclusive_bounds: bool, out_indices: npt.NDArray[np.int64], out_scores: npt.NDArray[np.float32],
    out_priorities: npt.NDArray[np.float64], out_scored: npt.NDArray[np.int64], num_threads: int = 0,
    codes: str = "int8",
) -> None: ...
def _int8_bounds(
    queries: npt.NDArray[Any], queries_dtype: int, candidates: npt.NDArray[Any], candidates_dtype: int,
    query_scales: npt.NDArray[np.float32] | None, candidate_scales: npt.NDArray[np.float32] | None,
    out_lower: npt.NDArray[np.float64], out_upper: npt.NDArray[np.float64], codes: str = "int8",
) -> None: ...
def certified_int8_native() -> bool: ...
def certified_bf16_native() -> bool: ...
def block_sizes(queries: int, candidates: int, dim: int, num_threads: int = 0) -> tuple[int, int]: ...
def worker_threads(requested: int = 0) -> int: ...
def _fail_in_block(num_blocks: int, failing_block: int, num_threads: int = 0) -> None: ...
