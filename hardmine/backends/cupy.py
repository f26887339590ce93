"""The ``cupy`` backend: score tiles from CuPy's matmul (cuBLAS) and selection, exclusion,
filters, draws and violation statistics in the numba-cuda kernels of :mod:`.cuda_kernels`.

Device inputs (CuPy arrays, torch CUDA tensors, ``__cuda_array_interface__`` exporters) are read
in place; ``"auto"`` sends them to ``cuda``, else here. Host inputs (NumPy arrays, memory maps,
shards) go to a GPU backend only when one is named (``backend="cupy"``): candidates that fit in
half the free device memory are uploaded once, larger dumps stream a tile at a time through two
pinned staging buffers on a copy stream (tile i+1 is copied while tile i is scored).
Score tiles are float32 products of float32 rows (half inputs are widened first, as on the CPU;
CuPy keeps TF32 off unless ``CUPY_TF32=1``).

Without a GPU the same code runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) with
NumPy standing in for CuPy: that is how CI checks it against the float64 reference.
"""

from __future__ import annotations

import numba
import numpy as np

from . import cuda_kernels as kernels
from .._draws import Rule
from .._interop import array_module
from .._problem import DEVICE, HOST, Problem
from .gpu_rows import CandidateRows, query_rows


def _array_module():
    """CuPy on a machine with a usable GPU; NumPy under the CUDA simulator; else an ImportError
    saying why not (recorded by the registry and shown by ``hardmine info``)."""
    if numba.config.ENABLE_CUDASIM:
        return np
    cupy = array_module()
    if not cupy.is_available():
        raise ImportError("cupy is installed but sees no usable CUDA device")
    from numba import cuda

    if not cuda.is_available():
        raise ImportError("numba-cuda sees no usable CUDA device")
    return cupy


xp = _array_module()

#: (query rows, candidate columns) of one score tile when the problem does not set them
_BLOCK = (16, 16) if xp is np else (1024, 16384)


def _host(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else xp.asnumpy(array)


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class DeviceArrays:
    """The problem's per-query and per-candidate arrays on the device, each copied once."""

    def __init__(self, problem: Problem):
        one = xp.zeros(1, dtype=np.int64)

        def given(array, dtype=np.int64):
            return xp.asarray(array, dtype=dtype) if array is not None and array.size else one.astype(dtype)

        self.exclusion = (
            given(problem.exclude_indptr), given(problem.exclude_indices), problem.exclude_indptr is not None,
            given(problem.query_groups), given(problem.candidate_groups), problem.query_groups is not None,
            given(problem.candidate_keys), given(problem.excluded_key_indptr), given(problem.excluded_key_indices),
            problem.excluded_key_indptr is not None,
        )
        self.has_keys = problem.candidate_keys is not None
        self.bounds = (
            given(problem.upper_bounds, np.float32), problem.upper_bounds is not None,
            given(problem.lower_bounds, np.float32), problem.lower_bounds is not None, problem.exclusive_bounds,
        )
        self.count_bounds = [xp.asarray(bound) for bound in problem.count_bounds]
        self.candidate_scales = None if problem.candidate_scales is None else xp.asarray(problem.candidate_scales)


#: device bytes the selection buffers of one query block may take (28 bytes per entry)
_SELECTION_BYTES = 1 << 30


def _blocks(problem: Problem, k: int = 1) -> tuple[int, int]:
    """(query rows, candidate columns) per tile: the problem's, else the defaults, with fewer
    columns for a large k and fewer rows so that the selection buffers (rows x the power of
    two above k + columns) stay within _SELECTION_BYTES."""
    columns = problem.block_size[1] or (_BLOCK[1] if k <= 1024 else max(_BLOCK[1] // 4, 1))
    rows = problem.block_size[0] or max(1, min(_BLOCK[0], _SELECTION_BYTES // (28 * _next_power_of_two(k + columns))))
    return rows, columns


def _query_block(problem: Problem, q0: int, q1: int):
    rows = query_rows(problem.queries, q0, q1, xp)
    if problem.metric == "cosine":
        rows *= xp.asarray(problem.query_scales[q0:q1, None])
    return rows


def _tiles(problem: Problem, device: DeviceArrays, queries, candidates: CandidateRows):
    """(c0, float32 score tile on the device) over every candidate tile."""
    for c0, rows in candidates.tiles():
        tile = xp.matmul(queries, rows.T)
        if device.candidate_scales is not None:
            tile *= device.candidate_scales[None, c0 : c0 + rows.shape[0]]
        yield c0, xp.ascontiguousarray(tile, dtype=np.float32)


class Selection:
    """One query block's running selection of ``k`` entries per row (:mod:`.cuda_kernels`)."""

    def __init__(self, rows: int, k: int, tile_columns: int, mode: int):
        self.k, self.mode, self.rows = k, mode, rows
        self.width = _next_power_of_two(k + tile_columns)
        self.values = xp.empty((rows, self.width), dtype=np.float64)
        self.scores = xp.empty((rows, self.width), dtype=np.float32)
        self.ids = xp.empty((rows, self.width), dtype=np.int64)
        self.keys = xp.empty((rows, self.width), dtype=np.int64)
        self.counts = xp.zeros(rows, dtype=np.int64)
        self.threshold = (xp.full(rows, -np.inf), xp.full(rows, -np.inf, dtype=np.float32),
                          xp.full(rows, np.iinfo(np.int64).max, dtype=np.int64))

    @property
    def buffers(self) -> tuple:
        return (self.values, self.scores, self.ids, self.keys, self.counts, *self.threshold)

    def result(self, launch, device: DeviceArrays, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, scores, values) on the host, ``width`` columns, -1 / -inf padded."""
        launch.reduce(self, device, final=True)
        counts = _host(self.counts)
        valid = np.arange(width)[None, :] < counts[:, None]
        take = min(width, self.width)
        ids = np.full((self.rows, width), -1, dtype=np.int64)
        scores = np.full((self.rows, width), -np.inf, dtype=np.float32)
        values = np.full((self.rows, width), -np.inf)
        ids[:, :take] = _host(self.ids[:, :take])
        scores[:, :take] = _host(self.scores[:, :take])
        values[:, :take] = _host(self.values[:, :take])
        ids = np.where(valid, ids, -1)
        scores, values = np.where(valid, scores, -np.inf), np.where(valid, values, -np.inf)
        if self.mode != kernels.TOP:  # draws are kept by priority and returned in window order
            order = np.lexsort((np.where(valid, ids, np.iinfo(np.int64).max), -scores.astype(np.float64)), axis=1)
            ids, scores, values = (np.take_along_axis(a, order, axis=1) for a in (ids, scores, values))
        return ids, scores.astype(np.float32), values


class NumbaLaunch:
    """The kernels of :mod:`.cuda_kernels`, launched through numba-cuda (or its simulator)."""

    def consume(self, selection: Selection, tile, columns: tuple[int, int], q0: int, c0: int, device: DeviceArrays,
                rule: Rule) -> None:
        """Appends the admissible entries of the tile's ``columns`` (a range) that beat the thresholds."""
        kernels.select_consume[selection.rows, kernels.THREADS](
            tile, columns[0], columns[1], q0, c0, selection.mode, np.uint64(rule.seed % 2**64),
            float(rule.temperature or 1.0), rule.first_row, rule.first_id, *selection.buffers, *device.exclusion,
            device.has_keys, *device.bounds)
        self.reduce(selection, device, final=False)

    def reduce(self, selection: Selection, device: DeviceArrays, final: bool) -> None:
        kernels.select_reduce[selection.rows, kernels.THREADS](
            selection.k, selection.width, final, *selection.buffers, device.has_keys)

    def violations(self, tile, q0: int, c0: int, positives, margin: float, outputs: tuple,
                   device: DeviceArrays) -> None:
        kernels.violations_consume[tile.shape[0], kernels.THREADS](
            tile, q0, c0, positives, np.float32(margin), *outputs, *device.exclusion)


def _tally(tile, device: DeviceArrays, problem: Problem, q0: int, tallies) -> None:
    """Adds each filter's count of scores beyond its bound to the device array ``tallies``."""
    rows = slice(q0, q0 + tile.shape[0])
    for f, (bound, below) in enumerate(zip(device.count_bounds, problem.count_below)):
        edge = bound[rows, None]
        beyond = (tile < edge) & (tile > -np.inf) if below else tile > edge
        tallies[rows, f] += beyond.sum(axis=1)


class CupyBackend:
    name = "cupy"
    devices = frozenset({HOST, DEVICE})
    precisions = frozenset({"fp32"})
    launch = NumbaLaunch()
    #: True under the CUDA simulator: correct, and far too slow for real work or timing
    simulated = xp is np

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, scores, _, tallies, _, _ = self._select(problem, k, Rule(0, None), mode=kernels.TOP, top_k=0)
        return ids, scores, tallies

    def sample(self, problem: Problem, count: int, rule: Rule, top_k: int = 0):
        mode = kernels.DRAW_UNIFORM if rule.temperature is None else kernels.DRAW_SOFTMAX
        return self._select(problem, count, rule, mode=mode, top_k=top_k)

    def _select(self, problem: Problem, count: int, rule: Rule, mode: int, top_k: int):
        num_queries, num_candidates = problem.queries.rows, problem.candidates.rows
        device = DeviceArrays(problem)
        query_rows, tile_columns = _blocks(problem, count + top_k)
        out = [np.full((num_queries, count), -1, dtype=np.int64), np.full((num_queries, count), -np.inf, np.float32),
               np.full((num_queries, count), -np.inf), np.zeros((num_queries, len(problem.count_bounds)), np.int64),
               np.full((num_queries, top_k), -1, dtype=np.int64), np.full((num_queries, top_k), -np.inf, np.float32)]
        kept, kept_top = min(count, num_candidates), min(top_k, num_candidates)
        tallies = xp.zeros(out[3].shape, dtype=np.int64)
        candidates = CandidateRows(problem.candidates, tile_columns, xp)
        for q0 in range(0, num_queries, query_rows):
            q1 = min(q0 + query_rows, num_queries)
            drawn = Selection(q1 - q0, kept, tile_columns, mode) if kept else None
            best = Selection(q1 - q0, kept_top, tile_columns, kernels.TOP) if kept_top else None
            for c0, tile in _tiles(problem, device, _query_block(problem, q0, q1), candidates):
                for selection in (best, drawn):
                    if selection is not None:
                        # The first tile meets an empty buffer that admits everything: its first
                        # columns go alone, so that the rest meets their k-th best as a threshold
                        # and far fewer entries reach the sort.
                        lead = 2 * selection.k if c0 == 0 and 4 * selection.k < tile.shape[1] else 0
                        if lead:
                            self.launch.consume(selection, tile, (0, lead), q0, c0, device, rule)
                        self.launch.consume(selection, tile, (lead, tile.shape[1]), q0, c0, device, rule)
                _tally(tile, device, problem, q0, tallies)
            if drawn is not None:
                out[0][q0:q1], out[1][q0:q1], out[2][q0:q1] = drawn.result(self.launch, device, count)
            if best is not None:
                out[4][q0:q1], out[5][q0:q1], _ = best.result(self.launch, device, top_k)
        out[3] = _host(tallies)
        return tuple(out)

    def violations(self, problem: Problem, positive_scores: np.ndarray, margin: float):
        num_queries = problem.queries.rows
        device = DeviceArrays(problem)
        count = xp.zeros(num_queries, dtype=np.int64)
        hinge_sum = xp.zeros(num_queries, dtype=np.float64)
        best_scores = xp.full(num_queries, -np.inf, dtype=np.float32)
        best_ids = xp.full(num_queries, -1, dtype=np.int64)
        positives = xp.asarray(positive_scores, dtype=np.float32)
        query_rows, tile_columns = _blocks(problem)
        candidates = CandidateRows(problem.candidates, tile_columns, xp)
        for q0 in range(0, num_queries, query_rows):
            q1 = min(q0 + query_rows, num_queries)
            for c0, tile in _tiles(problem, device, _query_block(problem, q0, q1), candidates):
                self.launch.violations(tile, q0, c0, positives, margin, (count, hinge_sum, best_scores, best_ids),
                                       device)
        count, hinge_sum, best_scores, argmax = (_host(a) for a in (count, hinge_sum, best_scores, best_ids))
        hinge = np.float32(margin) + best_scores - positive_scores
        max_hinge = np.where(argmax >= 0, np.maximum(hinge, np.float32(0)), np.float32(0)).astype(np.float32)
        return count, hinge_sum, max_hinge, argmax

    def similarity(self, problem: Problem) -> np.ndarray:
        out = np.empty((problem.queries.rows, problem.candidates.rows), dtype=np.float32)
        device = DeviceArrays(problem)
        query_rows, tile_columns = _blocks(problem)
        candidates = CandidateRows(problem.candidates, tile_columns, xp)
        for q0 in range(0, problem.queries.rows, query_rows):
            q1 = min(q0 + query_rows, problem.queries.rows)
            for c0, tile in _tiles(problem, device, _query_block(problem, q0, q1), candidates):
                out[q0:q1, c0 : c0 + tile.shape[1]] = _host(tile)
        return out
