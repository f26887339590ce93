"""The one place where user inputs are checked and converted.

Every public function calls into this module before any backend runs, so every
backend sees the same, already validated :class:`Problem`.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

try:  # bfloat16 is optional (the ``bf16`` extra)
    import ml_dtypes

    _BFLOAT16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _BFLOAT16 = None

#: dtype codes shared with the compiled core (``hardmine::DType``)
F32, F16, BF16 = 0, 1, 2

#: bytes per chunk when scanning inputs for NaN/inf and norms (bounded memory)
SCAN_BYTES = 8 << 20

#: largest |score| and |margin| the engine accepts: float32 arithmetic on such values
#: (s - margin, margin + s - s_p) stays far from overflow (FLT_MAX is about 2**128)
SCORE_LIMIT = 2.0**100

#: under cosine, rows whose norm lies outside [1/COSINE_SAFE_NORM, COSINE_SAFE_NORM] are
#: rescaled by a power of two first, so that float32 dot products neither overflow nor
#: lose their digits to underflow, and the inverse norms stay finite
COSINE_SAFE_NORM = 2.0**40

METRICS = ("dot", "cosine")


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
    """A validated (n, d) embedding matrix, in the caller's storage (never copied for fp32/fp16/bf16)."""

    array: np.ndarray
    dtype_code: int
    name: str

    @property
    def rows(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def shards(self) -> list[tuple[int, Embeddings]]:
        """(first row, the shard) for each non-empty shard; the matrix itself when not sharded."""
        if not isinstance(self.array, RowShards):
            return [(0, self)]
        shards = [(int(offset), Embeddings(part, self.dtype_code, self.name))
                  for offset, part in zip(self.array.offsets, self.array.parts) if part.shape[0]]
        return shards or [(0, Embeddings(self.array.parts[0], self.dtype_code, self.name))]

    def rows_f32(self, start: int, stop: int, *, copy: bool = True) -> np.ndarray:
        """Rows [start, stop) as C-contiguous float32: a copy the caller may modify, or with
        ``copy=False`` possibly the caller's own memory, for reading only."""
        if copy:
            return np.array(self.array[start:stop], dtype=np.float32, order="C", copy=True)
        return np.ascontiguousarray(self.array[start:stop], dtype=np.float32)


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
    array = _as_numpy(x, name)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.float32:
        code = F32
    elif array.dtype == np.float16:
        code = F16
    elif _BFLOAT16 is not None and array.dtype == _BFLOAT16:
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


def _sharded(parts: list | tuple, name: str) -> Embeddings:
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


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        if x.device.type != "cpu":
            raise TypeError(
                f"{name} is a torch tensor on {x.device}; this build has no GPU backend. "
                f"Move it with {name}.cpu() or install a CUDA-enabled hardmine"
            )
        # negated and conjugated views are lazy in torch and refuse .numpy(): materialise them
        tensor = x.detach().resolve_conj().resolve_neg()
        if str(tensor.dtype) == "torch.bfloat16":
            if _BFLOAT16 is None:
                raise TypeError(f"{name} is bfloat16; install ml_dtypes (pip install hardmine[bf16])")
            import torch

            return tensor.view(torch.int16).numpy().view(_BFLOAT16)
        return tensor.numpy()
    if module == "cupy":
        raise TypeError(f"{name} is a CuPy array; this build has no GPU backend. Use cupy.asnumpy({name})")
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a 2-D array of embeddings; got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except Exception as error:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a 2-D array of embeddings; got {type(x).__name__}") from error
    return array


#: per storage type: the signed and unsigned integer views, the mask dropping the sign
#: bit, and the bit pattern of +inf. Magnitudes sort like their bit patterns, so two
#: reductions without temporaries find a row's largest |value|: the signed maximum is the
#: largest positive value (or, in an all-negative row, the largest-magnitude negative), the
#: unsigned maximum the largest-magnitude negative (or the largest positive without
#: negatives). A masked pattern at or above +inf's is inf or NaN.
_MAGNITUDE_BITS = {F32: (np.int32, np.uint32, 0x7FFFFFFF, 0x7F800000), F16: (np.int16, np.uint16, 0x7FFF, 0x7C00),
                   BF16: (np.int16, np.uint16, 0x7FFF, 0x7F80)}


def _code_of(dtype: np.dtype) -> int:
    return F32 if dtype == np.float32 else F16 if dtype == np.float16 else BF16


def _row_peaks(chunk: np.ndarray, code: int) -> tuple[np.ndarray, np.ndarray]:
    """(finite, peak): per row, whether every value is finite and the largest |value| (float64)."""
    signed, unsigned, mask, infinity = _MAGNITUDE_BITS[code]
    if chunk.shape[0] == 0:
        return np.ones(0, dtype=bool), np.zeros(0)
    positive_side = chunk.view(signed).max(axis=1).view(unsigned) & unsigned(mask)
    negative_side = chunk.view(unsigned).max(axis=1) & unsigned(mask)
    patterns = np.maximum(positive_side, negative_side)
    finite = patterns < infinity
    if code == BF16:
        values = (patterns.astype(np.uint32) << np.uint32(16)).view(np.float32)
    else:
        values = patterns.view(np.float32 if code == F32 else np.float16)
    return finite, np.where(finite, values.astype(np.float64), np.inf)


def first_nonfinite_row(array: np.ndarray, chunk_bytes: int = SCAN_BYTES) -> tuple[int | None, float]:
    """(first row holding NaN/inf or None, largest |value|) of an fp32/fp16/bf16 matrix,
    read in chunks of about ``chunk_bytes`` (no conversion of halves)."""
    code = _code_of(array.dtype)
    chunk = max(1, chunk_bytes // (array.itemsize * max(array.shape[1], 1)))
    peak = 0.0
    for start in range(0, array.shape[0], chunk):
        finite, peaks = _row_peaks(array[start : start + chunk], code)
        if not finite.all():
            return start + int(np.argmin(finite)), np.inf
        if peaks.size:
            peak = max(peak, float(peaks.max()))
    return None, peak


def check_dot_range(query_peak: float, candidate_peak: float, dim: int, queries: str, candidates: str) -> None:
    """Refuses inputs whose float32 dot products could overflow: with every |value| at most
    the peaks, every partial sum is at most ``dim * query_peak * candidate_peak``."""
    bound = dim * query_peak * candidate_peak
    if bound > SCORE_LIMIT:
        raise ValueError(
            f"dot products may overflow float32: {queries} values reach {query_peak:.3g} and {candidates} values "
            f"{candidate_peak:.3g}, so over d={dim} a score can reach {bound:.3g} (the engine accepts up to "
            f"{SCORE_LIMIT:.3g}); rescale the embeddings or use metric='cosine'"
        )


@dataclass(frozen=True)
class RowScan:
    """What one pass over a matrix found: inverse norms (cosine), the largest |value|
    (inf when not scanned) and the rows whose norms need a power-of-two rescale."""

    inverse_norms: np.ndarray | None
    peak: float
    extreme_rows: np.ndarray | None = None
    extreme_shifts: np.ndarray | None = None  # int exponents e: the row is multiplied by 2**-e


def scan(emb: Embeddings, *, check_finite: bool, want_norms: bool, skippable: bool = True) -> RowScan:
    """Streams over the rows once: rejects NaN/inf (first bad row named), finds the largest
    magnitude and, under cosine, the float32 inverse L2 norms (zero rows rejected).
    ``skippable``: the caller offers ``check_finite=False``, so the message suggests it."""
    if not (check_finite or want_norms):
        return RowScan(None, np.inf)
    inverse = np.empty(emb.rows, dtype=np.float32) if want_norms else None
    chunk = max(1, SCAN_BYTES // (4 * emb.dim))
    peak = 0.0 if check_finite else np.inf
    extreme: list[np.ndarray] = []
    shifts: list[np.ndarray] = []
    for start in range(0, emb.rows, chunk):
        stop = min(start + chunk, emb.rows)
        if check_finite:
            finite, peaks = _row_peaks(emb.array[start:stop], emb.dtype_code)
            if not finite.all():
                row = start + int(np.argmin(finite))
                advice = ("clean the data or pass check_finite=False (the rows are then not scanned: a NaN or -inf "
                          "score is never returned, +inf ranks first)") if skippable else "clean the data"
                raise ValueError(f"{emb.name} row {row} contains NaN or inf; {advice}")
            if peaks.size:
                peak = max(peak, float(peaks.max()))
        if inverse is not None:
            block = emb.rows_f32(start, stop, copy=False)
            norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            zero = norms == 0
            if zero.any():
                row = start + int(np.argmax(zero))
                raise ValueError(
                    f"{emb.name} row {row} has zero norm, so its cosine similarity is undefined; "
                    f"drop the row or use metric='dot'"
                )
            outside = ((norms > COSINE_SAFE_NORM) | (norms < 1.0 / COSINE_SAFE_NORM)) & np.isfinite(norms)
            if outside.any():  # exact power-of-two shifts bring these norms near 1 (see rescaled)
                exponents = np.round(np.log2(norms[outside])).astype(np.int64)
                extreme.append(start + np.flatnonzero(outside))
                shifts.append(exponents)
                norms[outside] = norms[outside] * np.exp2(-exponents.astype(np.float64))
            with np.errstate(divide="ignore"):  # check_finite=False: an inf row gets scale 0
                inverse[start:stop] = (1.0 / norms).astype(np.float32)
    if not extreme:
        return RowScan(inverse, peak)
    return RowScan(inverse, peak, np.concatenate(extreme), np.concatenate(shifts))


def rescaled(emb: Embeddings, found: RowScan) -> Embeddings:
    """``emb`` with its extreme-norm rows multiplied by 2**-e (exact in binary floating point),
    as a float32 copy; the inverse norms in ``found`` already belong to the rescaled rows."""
    if found.extreme_rows is None:
        return emb
    rows = emb.rows_f32(0, emb.rows)
    rows[found.extreme_rows] = np.ldexp(rows[found.extreme_rows], -found.extreme_shifts[:, None].astype(np.int32))
    return Embeddings(rows, F32, emb.name)


def scan_rows(emb: Embeddings, *, check_finite: bool, want_norms: bool, skippable: bool = True) -> np.ndarray | None:
    """The float32 inverse norms of :func:`scan` (None unless ``want_norms``), for callers that
    only check rows or normalise them themselves."""
    return scan(emb, check_finite=check_finite, want_norms=want_norms, skippable=skippable).inverse_norms


def unit_rows(x: Any, name: str) -> np.ndarray:
    """A float32 copy of the rows scaled to unit L2 norm (NaN/inf and zero rows rejected by
    :func:`scan_rows`, naming the first)."""
    emb = embeddings(x, name)
    found = scan(emb, check_finite=True, want_norms=True, skippable=False)
    rows = rescaled(emb, found).rows_f32(0, emb.rows)
    rows *= found.inverse_norms[:, None]
    return rows


def _int_array(x: Any, name: str) -> np.ndarray:
    array = np.asarray(x)
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
        indptr = _int_array(value[0], f"{name} indptr").astype(np.int64).ravel()
        indices = _int_array(value[1], f"{name} indices").astype(np.int64).ravel()
        if indptr.shape != (num_queries + 1,):
            raise ValueError(f"{name} indptr must have length Q+1 = {num_queries + 1}; got {indptr.shape[0]}")
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError(f"{name} indptr must rise from 0 to len(indices) = {indices.shape[0]}")
    elif isinstance(value, list) and any(np.ndim(v) == 1 for v in value):
        if len(value) != num_queries:
            raise ValueError(f"{name} must have one entry per query ({num_queries}); got {len(value)}")
        rows = [_int_array(v, name).astype(np.int64).ravel() for v in value]
        indptr = np.zeros(num_queries + 1, dtype=np.int64)
        np.cumsum([r.size for r in rows], out=indptr[1:])
        indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    else:
        array = _int_array(value, name)
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
        array = _int_array(value, name)
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
    )
