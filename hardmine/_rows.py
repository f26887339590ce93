"""Streamed passes over embedding rows: NaN/inf, the largest magnitude (for the float32
overflow check) and, under cosine, inverse norms, with exact power-of-two rescaling of rows
whose norms would overflow or underflow float32 products. Bounded memory: chunks of SCAN_BYTES."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._problem import BF16, F16, F32, DeviceMatrix, Embeddings

#: bytes per chunk when scanning inputs for NaN/inf and norms (bounded memory)
SCAN_BYTES = 8 << 20


#: largest |score| and |margin| the engine accepts: float32 arithmetic on such values
#: (s - margin, margin + s - s_p) stays far from overflow (FLT_MAX is about 2**128)
SCORE_LIMIT = 2.0**100


#: under cosine, rows whose norm lies outside [1/COSINE_SAFE_NORM, COSINE_SAFE_NORM] are
#: rescaled by a power of two first, so that float32 dot products neither overflow nor
#: lose their digits to underflow, and the inverse norms stay finite
COSINE_SAFE_NORM = 2.0**40


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


def row_peaks(chunk, code: int, xp=np) -> tuple[np.ndarray, np.ndarray]:
    """(finite, peak) on the host: per row, whether every value is finite and the largest
    |value| (float64). ``chunk`` may be a device array of the array module ``xp``: only one
    bit pattern per row leaves the device."""
    signed, unsigned, mask, infinity = _MAGNITUDE_BITS[code]
    if chunk.shape[0] == 0:
        return np.ones(0, dtype=bool), np.zeros(0)
    positive_side = chunk.view(signed).max(axis=1).view(unsigned) & unsigned(mask)
    negative_side = chunk.view(unsigned).max(axis=1) & unsigned(mask)
    patterns = xp.maximum(positive_side, negative_side)
    if xp is not np:
        patterns = xp.asnumpy(patterns)
    finite = patterns < infinity
    if code == BF16:
        values = (patterns.astype(np.uint32) << np.uint32(16)).view(np.float32)
    else:
        values = patterns.view(np.float32 if code == F32 else np.float16)
    return finite, np.where(finite, values.astype(np.float64), np.inf)


def _squared_norms(emb: Embeddings, start: int, stop: int) -> np.ndarray:
    """float64 squared norms of rows [start, stop) (exact float32 products, float64 sums), on
    the device for a device matrix."""
    if isinstance(emb.array, DeviceMatrix):
        xp = emb.array.xp
        block = emb.array.data[start:stop].astype(np.float64)
        norms = (block * block).sum(axis=1)
        return norms if xp is np else xp.asnumpy(norms)
    block = emb.rows_f32(start, stop, copy=False)
    return np.einsum("ij,ij->i", block, block, dtype=np.float64)


def first_nonfinite_row(array: np.ndarray, chunk_bytes: int = SCAN_BYTES) -> tuple[int | None, float]:
    """(first row holding NaN/inf or None, largest |value|) of an fp32/fp16/bf16 matrix,
    read in chunks of about ``chunk_bytes`` (no conversion of halves)."""
    code = _code_of(array.dtype)
    chunk = max(1, chunk_bytes // (array.itemsize * max(array.shape[1], 1)))
    peak = 0.0
    for start in range(0, array.shape[0], chunk):
        finite, peaks = row_peaks(array[start : start + chunk], code)
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
            if isinstance(emb.array, DeviceMatrix):
                finite, peaks = row_peaks(emb.array.data[start:stop], emb.dtype_code, emb.array.xp)
            else:
                finite, peaks = row_peaks(emb.array[start:stop], emb.dtype_code)
            if not finite.all():
                row = start + int(np.argmin(finite))
                advice = ("clean the data or pass check_finite=False (the rows are then not scanned: a NaN or -inf "
                          "score is never returned, +inf ranks first)") if skippable else "clean the data"
                raise ValueError(f"{emb.name} row {row} contains NaN or inf; {advice}")
            if peaks.size:
                peak = max(peak, float(peaks.max()))
        if inverse is not None:
            norms = np.sqrt(_squared_norms(emb, start, stop))
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
    as a float32 copy (on the device for a device matrix); the inverse norms in ``found``
    already belong to the rescaled rows."""
    if found.extreme_rows is None:
        return emb
    shifts = -found.extreme_shifts[:, None].astype(np.int32)
    if isinstance(emb.array, DeviceMatrix):
        xp = emb.array.xp
        rows = emb.array.data.astype(np.float32, copy=True)
        extreme = xp.asarray(found.extreme_rows)
        rows[extreme] = xp.ldexp(rows[extreme], xp.asarray(shifts))
        return Embeddings(DeviceMatrix(rows, xp), F32, emb.name)
    rows = emb.rows_f32(0, emb.rows)
    rows[found.extreme_rows] = np.ldexp(rows[found.extreme_rows], shifts)
    return Embeddings(rows, F32, emb.name)


def scan_rows(emb: Embeddings, *, check_finite: bool, want_norms: bool, skippable: bool = True) -> np.ndarray | None:
    """The float32 inverse norms of :func:`scan` (None unless ``want_norms``), for callers that
    only check rows or normalise them themselves."""
    return scan(emb, check_finite=check_finite, want_norms=want_norms, skippable=skippable).inverse_norms
