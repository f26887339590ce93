"""The validated inputs every backend reads: embedding matrices (one array or row shards)
and the :class:`Problem` of one call. Built by :mod:`hardmine._validation`, never by hand."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: dtype codes shared with the compiled core (``hardmine::DType``)
F32, F16, BF16 = 0, 1, 2

#: where a Problem's arrays live; a backend declares which it reads (``Backend.devices``)
HOST = "host"
#: arrays in GPU memory (CuPy, torch CUDA tensors, ``__cuda_array_interface__`` exporters)
DEVICE = "cuda"


class DeviceMatrix:
    """A 2-D array in GPU memory read in place through its array module ``xp`` (CuPy; NumPy
    under the CUDA simulator). Indexing copies just those rows to the host, so host-side steps
    (pair scores of positives, k-means) work unchanged; the GPU backends read ``data``."""

    ndim = 2

    def __init__(self, data: Any, xp: Any):
        self.data, self.xp = data, xp
        self.shape = tuple(int(n) for n in data.shape)
        self.dtype = np.dtype(data.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice):
            key = self.xp.asarray(np.asarray(key, dtype=np.int64))
        rows = self.data[key]
        return np.array(rows) if self.xp is np else self.xp.asnumpy(rows)


class RowShards:
    """Several (n_i, d) arrays of one dtype read as their row-wise concatenation
    (e.g. the memory maps of a directory of ``.npy`` shards), never copied whole."""

    ndim = 2

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), int(parts[0].shape[1]))
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows by slice (a view inside one shard, else a copy of just those rows) or by integer ids."""
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("RowShards slices must have step 1")
            stop = max(start, stop)
            first = int(np.searchsorted(self.offsets, start, side="right") - 1)
            last = int(np.searchsorted(self.offsets, stop, side="left"))
            if last - first <= 1:
                base = int(self.offsets[min(first, len(self.parts) - 1)])
                return self.parts[min(first, len(self.parts) - 1)][start - base : stop - base]
            return np.concatenate([
                self.parts[s][max(start, self.offsets[s]) - self.offsets[s] : min(stop, self.offsets[s + 1])
                              - self.offsets[s]]
                for s in range(first, last)
            ])
        ids = np.asarray(key, dtype=np.int64)
        out = np.empty((ids.shape[0], self.shape[1]), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, ids, side="right") - 1
        for s in np.unique(shard):
            here = shard == s
            out[here] = self.parts[s][ids[here] - self.offsets[s]]
        return out


@dataclass(frozen=True)
class Embeddings:
    """A validated (n, d) embedding matrix, in the caller's storage (never copied for fp32/fp16/bf16):
    a NumPy array, :class:`RowShards` or a :class:`DeviceMatrix`."""

    array: np.ndarray
    dtype_code: int
    name: str

    @property
    def rows(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def device(self) -> str:
        return DEVICE if isinstance(self.array, DeviceMatrix) else HOST

    def shards(self) -> list[tuple[int, Embeddings]]:
        """(first row, the shard) for each non-empty shard; the matrix itself when not sharded."""
        if not isinstance(self.array, RowShards):
            return [(0, self)]
        shards = [(int(offset), Embeddings(part, self.dtype_code, self.name))
                  for offset, part in zip(self.array.offsets, self.array.parts) if part.shape[0]]
        return shards or [(0, Embeddings(self.array.parts[0], self.dtype_code, self.name))]

    def rows_f32(self, start: int, stop: int, *, copy: bool = True) -> np.ndarray:
        """Rows [start, stop) as C-contiguous float32 on the host: a copy the caller may modify, or
        with ``copy=False`` possibly the caller's own memory, for reading only."""
        if copy:
            return np.array(self.array[start:stop], dtype=np.float32, order="C", copy=True)
        return np.ascontiguousarray(self.array[start:stop], dtype=np.float32)


#: the precisions screened with certified low-precision scores and re-scored exactly
CERTIFIED = ("int8", "bf16")


@dataclass(frozen=True)
class Problem:
    """Everything a backend needs for one call; built by :func:`problem`."""

    queries: Embeddings
    candidates: Embeddings
    metric: str
    query_scales: np.ndarray | None  # (Q,) float32 inverse norms under cosine
    candidate_scales: np.ndarray | None  # (C,) float32
    exclude_indptr: np.ndarray | None  # (Q+1,) int64
    exclude_indices: np.ndarray | None  # (nnz,) int64, sorted within each query
    query_groups: np.ndarray | None  # (Q,) int64
    candidate_groups: np.ndarray | None  # (C,) int64
    block_size: tuple[int, int]  # (query_rows, candidate_rows); 0 = backend's choice
    num_threads: int  # 0 = all cores
    device: str = HOST  # where the arrays live, so that "auto" can pick a backend that reads them
    precision: str = "fp32"  # the scoring path asked for: "fp32" or one of CERTIFIED
    # Mining only (hardmine.mine sets them with dataclasses.replace):
    candidate_keys: np.ndarray | None = None  # (C,) int64; at most one result per key
    excluded_key_indptr: np.ndarray | None = None  # (Q+1,) keys a query may not get
    excluded_key_indices: np.ndarray | None = None  # sorted within each query
    upper_bounds: np.ndarray | None = None  # (Q,) float32: s <= upper (< when exclusive)
    lower_bounds: np.ndarray | None = None  # (Q,) float32: s >= lower (> when exclusive)
    exclusive_bounds: bool = False
    # Statistics: per filter a (Q,) float32 bound and whether to count s < bound (else s > bound)
    count_bounds: tuple[np.ndarray, ...] = ()
    count_below: tuple[bool, ...] = ()


def restrict_candidates(problem: Problem, offset: int, shard: Embeddings) -> Problem:
    """The problem over candidate rows [offset, offset + shard.rows), with ids relative to the shard."""
    stop = offset + shard.rows
    fields: dict[str, Any] = {"candidates": shard}
    for name in ("candidate_scales", "candidate_groups", "candidate_keys"):
        value = getattr(problem, name)
        if value is not None:
            fields[name] = value[offset:stop]
    if problem.exclude_indptr is not None:
        indices = problem.exclude_indices
        inside = (indices >= offset) & (indices < stop)
        before = np.concatenate([[0], np.cumsum(inside, dtype=np.int64)])
        fields["exclude_indptr"] = np.ascontiguousarray(before[problem.exclude_indptr])
        fields["exclude_indices"] = np.ascontiguousarray(indices[inside] - offset)
    return replace(problem, **fields)


def restrict_queries(problem: Problem, start: int, stop: int, shard: Embeddings) -> Problem:
    """The problem over query rows [start, stop) (``shard`` holds them); candidate ids unchanged."""
    fields: dict[str, Any] = {"queries": shard}
    for name in ("query_scales", "query_groups", "upper_bounds", "lower_bounds"):
        value = getattr(problem, name)
        if value is not None:
            fields[name] = value[start:stop]
    for indptr_name, indices_name in (("exclude_indptr", "exclude_indices"),
                                      ("excluded_key_indptr", "excluded_key_indices")):
        indptr = getattr(problem, indptr_name)
        if indptr is not None:
            fields[indptr_name] = np.ascontiguousarray(indptr[start : stop + 1] - indptr[start])
            fields[indices_name] = getattr(problem, indices_name)[indptr[start] : indptr[stop]]
    fields["count_bounds"] = tuple(np.ascontiguousarray(bound[start:stop]) for bound in problem.count_bounds)
    return replace(problem, **fields)


def select_queries(problem: Problem, rows: np.ndarray) -> Problem:
    """The problem over the query rows ``rows`` (any order; their embeddings gathered into a copy)."""
    rows = np.asarray(rows, dtype=np.int64)
    queries = Embeddings(np.ascontiguousarray(problem.queries.array[rows]), problem.queries.dtype_code,
                         problem.queries.name)
    fields: dict[str, Any] = {"queries": queries}
    for name in ("query_scales", "query_groups", "upper_bounds", "lower_bounds"):
        value = getattr(problem, name)
        if value is not None:
            fields[name] = np.ascontiguousarray(value[rows])
    for indptr_name, indices_name in (("exclude_indptr", "exclude_indices"),
                                      ("excluded_key_indptr", "excluded_key_indices")):
        indptr = getattr(problem, indptr_name)
        if indptr is not None:
            starts, stops = indptr[rows], indptr[rows + 1]
            fields[indptr_name] = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64)
            segments = [getattr(problem, indices_name)[a:b] for a, b in zip(starts, stops)]
            fields[indices_name] = np.concatenate(segments).astype(np.int64) if segments else np.zeros(0, np.int64)
    fields["count_bounds"] = tuple(np.ascontiguousarray(bound[rows]) for bound in problem.count_bounds)
    return replace(problem, **fields)
