"""The one place where user inputs are checked and converted.

Every public function calls into this module before any backend runs, so every
backend sees the same, already validated :class:`~hardmine._problem.Problem`.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from ._interop import BFLOAT16, as_numpy, device_view, is_device_array, to_host
from ._problem import BF16, DEVICE, F16, F32, HOST, DeviceMatrix, Embeddings, Problem, RowShards
from ._rows import SCORE_LIMIT, check_dot_range, rescaled, scan

METRICS = ("dot", "cosine")


def _dtype_name(dtype: np.dtype) -> str:
    return str(dtype)


def embeddings(x: Any, name: str) -> Embeddings:
    """Validates one embedding matrix without copying fp32/fp16/bf16 NumPy data.

    float64 input is accepted and converted to float32 (a copy); torch CPU tensors
    are viewed through DLPack. A list or tuple of 2-D arrays (shards) is read as
    their row-wise concatenation (a :class:`RowShards`), never copied whole.
    """
    if isinstance(x, RowShards):
        x = x.parts
    if isinstance(x, (list, tuple)) and x and all(getattr(part, "ndim", 0) >= 2 for part in x):
        return _sharded(x, name)
    if is_device_array(x):
        return _on_device(x, name)
    array = as_numpy(x, name)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.float32:
        code = F32
    elif array.dtype == np.float16:
        code = F16
    elif BFLOAT16 is not None and array.dtype == BFLOAT16:
        code = BF16
    else:
        raise TypeError(
            f"{name} must hold float32, float16 or bfloat16 values; got dtype {_dtype_name(array.dtype)}. "
            f"Convert it first, e.g. {name}.astype(np.float32)"
        )
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column (d >= 1); got shape {array.shape}")
    if any(stride % array.itemsize for stride in array.strides):
        array = np.ascontiguousarray(array)
    return Embeddings(array=array, dtype_code=code, name=name)


def _on_device(x: Any, name: str) -> Embeddings:
    """A device matrix read in place (CuPy, torch CUDA, ``__cuda_array_interface__``); float64
    is converted to float32 on the device, non-unit-stride rows made contiguous there."""
    view = device_view(x, name)
    data, xp = view.data, view.xp
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype not in (np.float32, np.float16):
        raise TypeError(f"{name} must hold float32 or float16 values on the device; got dtype "
                        f"{_dtype_name(np.dtype(data.dtype))}. Convert it first, e.g. {name}.astype(cupy.float32)")
    if data.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {tuple(data.shape)}")
    if data.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column (d >= 1); got shape {tuple(data.shape)}")
    if xp is not np and data.device.id != xp.cuda.Device().id:
        raise ValueError(f"{name} is on GPU {data.device.id} but the current CUDA device is "
                         f"{xp.cuda.Device().id}; run under `with cupy.cuda.Device({data.device.id}):`")
    if not (data.flags.c_contiguous or data.flags.f_contiguous):
        data = xp.ascontiguousarray(data)
    code = F32 if data.dtype == np.float32 else F16
    return Embeddings(array=DeviceMatrix(data, xp), dtype_code=code, name=name)


def _sharded(parts: list | tuple, name: str) -> Embeddings:
    if any(is_device_array(part) for part in parts):
        raise TypeError(f"{name} is a list of device arrays; shards are for host memory (memory maps): pass one "
                        f"device array, e.g. cupy.concatenate({name})")
    shards = [embeddings(part, f"{name}[{i}]") for i, part in enumerate(parts)]
    if len(shards) == 1:
        return Embeddings(shards[0].array, shards[0].dtype_code, name)
    first = shards[0]
    for i, shard in enumerate(shards[1:], start=1):
        if shard.dim != first.dim or shard.dtype_code != first.dtype_code:
            raise ValueError(
                f"{name}[{i}] has shape {shard.array.shape} and dtype {shard.array.dtype}, but {name}[0] has "
                f"{first.dim} columns and dtype {first.array.dtype}; shards must share d and dtype"
            )
    return Embeddings(RowShards([shard.array for shard in shards]), first.dtype_code, name)


def unit_rows(x: Any, name: str) -> np.ndarray:
    """A float32 copy of the rows scaled to unit L2 norm (NaN/inf and zero rows rejected by
    :func:`scan_rows`, naming the first)."""
    emb = embeddings(x, name)
    found = scan(emb, check_finite=True, want_norms=True, skippable=False)
    rows = rescaled(emb, found).rows_f32(0, emb.rows)
    rows *= found.inverse_norms[:, None]
    return rows


def int_array(x: Any, name: str) -> np.ndarray:
    array = np.asarray(to_host(x))
    if array.size == 0 and array.dtype.kind not in "iu":
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold integer ids; got dtype {_dtype_name(array.dtype)}")
    return array


def _check_ids(ids: np.ndarray, name: str, num_candidates: int, rows: np.ndarray | None = None) -> None:
    if ids.size == 0:
        return
    bad = (ids < 0) | (ids >= num_candidates)
    if bad.any():
        at = int(np.argmax(bad))
        where = f"query {int(rows[at])}" if rows is not None else f"position {at}"
        raise ValueError(
            f"{name}: id {int(ids[at])} at {where} is outside [0, {num_candidates}) (candidate row numbers)"
        )


def exclusion(
    value: Any, num_queries: int, num_candidates: int, name: str = "exclude"
) -> tuple[np.ndarray, np.ndarray] | None:
    """Normalises per-query candidate ids into sorted CSR ``(indptr, indices)``.

    Accepted forms: a 1-D int array ``(Q,)`` (one id per query); a 2-D int array
    ``(Q, m)``; a tuple ``(indptr, indices)``; a scipy.sparse matrix of shape (Q, C);
    a list of per-query id sequences.
    """
    if value is None:
        return None
    if type(value).__module__.startswith("scipy.sparse") and hasattr(value, "tocsr"):
        if tuple(value.shape) != (num_queries, num_candidates):
            raise ValueError(f"{name} as a scipy.sparse matrix must have shape (Q, C) = ({num_queries}, "
                             f"{num_candidates}), one row per query; got {value.shape}")
        # Any format (CSC, COO, LIL, DOK, BSR...) is read through CSR; the ids are its non-zero entries.
        matrix = value.tocsr(copy=True)
        matrix.eliminate_zeros()
        value = (matrix.indptr, matrix.indices)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} as a tuple must be (indptr, indices); got {len(value)} items")
        indptr = int_array(value[0], f"{name} indptr").astype(np.int64).ravel()
        indices = int_array(value[1], f"{name} indices").astype(np.int64).ravel()
        if indptr.shape != (num_queries + 1,):
            raise ValueError(f"{name} indptr must have length Q+1 = {num_queries + 1}; got {indptr.shape[0]}")
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError(f"{name} indptr must rise from 0 to len(indices) = {indices.shape[0]}")
    elif isinstance(value, list) and any(np.ndim(v) == 1 for v in value):
        if len(value) != num_queries:
            raise ValueError(f"{name} must have one entry per query ({num_queries}); got {len(value)}")
        rows = [int_array(v, name).astype(np.int64).ravel() for v in value]
        indptr = np.zeros(num_queries + 1, dtype=np.int64)
        np.cumsum([r.size for r in rows], out=indptr[1:])
        indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    else:
        array = int_array(value, name)
        if array.ndim not in (1, 2) or array.shape[0] != num_queries:
            raise ValueError(
                f"{name} must have shape (Q,) or (Q, m) with Q = {num_queries} queries; got shape {array.shape}"
            )
        per_row = 1 if array.ndim == 1 else array.shape[1]
        indices = array.astype(np.int64).reshape(-1)
        indptr = np.arange(num_queries + 1, dtype=np.int64) * per_row
    rows = np.repeat(np.arange(num_queries, dtype=np.int64), np.diff(indptr))
    _check_ids(indices, name, num_candidates, rows)
    order = np.lexsort((indices, rows))
    return np.ascontiguousarray(indptr), np.ascontiguousarray(indices[order])


def groups(
    query_groups: Any, candidate_groups: Any, num_queries: int, num_candidates: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Checks a pair of group-label arrays (any integers; equal labels = same group)."""
    if query_groups is None and candidate_groups is None:
        return None
    if query_groups is None or candidate_groups is None:
        missing = "query_groups" if query_groups is None else "candidate_groups"
        raise ValueError(f"query_groups and candidate_groups come together; {missing} is missing")
    out = []
    for value, name, length in (
        (query_groups, "query_groups", num_queries),
        (candidate_groups, "candidate_groups", num_candidates),
    ):
        array = int_array(value, name)
        if array.ndim != 1 or array.shape[0] != length:
            raise ValueError(f"{name} must have shape ({length},), one label per row; got shape {array.shape}")
        out.append(np.ascontiguousarray(array, dtype=np.int64))
    return out[0], out[1]


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)


def metric(value: Any) -> str:
    if value not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {value!r}")
    return str(value)


def block_size(value: Any) -> tuple[int, int]:
    """None -> (0, 0) (automatic); n -> (n, n); (query_rows, candidate_rows)."""
    if value is None:
        return 0, 0
    if isinstance(value, tuple) and len(value) == 2:
        return positive_int(value[0], "block_size[0]"), positive_int(value[1], "block_size[1]")
    size = positive_int(value, "block_size")
    return size, size


def num_threads(value: Any) -> int:
    return 0 if value is None else positive_int(value, "num_threads")


def real(value: Any, name: str) -> float:
    """A finite real of at most SCORE_LIMIT in magnitude (margins, score bounds, temperatures
    meet float32 scores, so a larger one could only overflow them)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if abs(float(value)) > SCORE_LIMIT:
        raise ValueError(f"{name} must be at most {SCORE_LIMIT:.3g} in magnitude (scores are float32); got {value!r}")
    return float(value)


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_result_size(rows: int, width: int, name: str, bytes_per_entry: int = 12) -> None:
    """Refuses a (rows, width) padded result that could not fit in memory, naming its size."""
    needed = rows * width * bytes_per_entry
    available = available_memory()
    if needed > available:
        raise ValueError(
            f"{name}={width:,} asks for a ({rows:,}, {width:,}) result of {needed / 2**30:,.1f} GiB, more than the "
            f"{available / 2**30:,.1f} GiB available; rows with fewer admissible candidates are padded with -1, so "
            f"ask for at most as many as there are candidates"
        )


def problem(
    queries: Any,
    candidates: Any,
    *,
    metric_name: str,
    exclude: Any = None,
    query_groups: Any = None,
    candidate_groups: Any = None,
    block: Any = None,
    threads: Any = None,
    check_finite: bool = True,
    exclude_name: str = "exclude",
) -> Problem:
    """Validates everything the engine functions share."""
    q = embeddings(queries, "queries")
    c = embeddings(candidates, "candidates")
    if q.dim != c.dim:
        raise ValueError(
            f"queries and candidates must have the same dimension d; got {q.dim} and {c.dim}"
        )
    metric_name = metric(metric_name)
    cosine = metric_name == "cosine"
    query_scan = scan(q, check_finite=bool(check_finite), want_norms=cosine)
    candidate_scan = scan(c, check_finite=bool(check_finite), want_norms=cosine)
    if cosine:
        q, c = rescaled(q, query_scan), rescaled(c, candidate_scan)
    elif check_finite:
        check_dot_range(query_scan.peak, candidate_scan.peak, q.dim, "queries", "candidates")
    query_scales, candidate_scales = query_scan.inverse_norms, candidate_scan.inverse_norms
    csr = exclusion(exclude, q.rows, c.rows, exclude_name)
    grouped = groups(query_groups, candidate_groups, q.rows, c.rows)
    return Problem(
        queries=q,
        candidates=c,
        metric=metric_name,
        query_scales=query_scales,
        candidate_scales=candidate_scales,
        exclude_indptr=None if csr is None else csr[0],
        exclude_indices=None if csr is None else csr[1],
        query_groups=None if grouped is None else grouped[0],
        candidate_groups=None if grouped is None else grouped[1],
        block_size=block_size(block),
        num_threads=num_threads(threads),
        device=DEVICE if DEVICE in (q.device, c.device) else HOST,
    )
