"""The Numba kernels of the ``numba`` backend: selection and violation scans over one score
tile, and the exact fp16 -> fp32 row conversion. Same rules as the C++ core: a reservoir with a
running threshold, ties by the smaller index, NaN never admitted. Each runs on its caller's
thread (``nogil``); the backend's workers supply the parallelism."""

from __future__ import annotations

import numba
import numpy as np

EXCLUSION_ARGS = (
    "int64[::1], int64[::1], boolean, int64[::1], int64[::1], boolean, "
    "int64[::1], int64[::1], int64[::1], boolean"
)


BOUNDS_ARGS = "float32[::1], boolean, float32[::1], boolean, boolean"


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


@numba.njit(f"boolean(int64, int64, {EXCLUSION_ARGS})", cache=True, nogil=True)
def excluded(
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


@numba.njit(f"boolean(int64, float32, {BOUNDS_ARGS})", cache=True, nogil=True)
def admits(query, score, upper, has_upper, lower, has_lower, exclusive):
    if has_upper and not (score < upper[query] if exclusive else score <= upper[query]):
        return False
    if has_lower and not (score > lower[query] if exclusive else score >= lower[query]):
        return False
    return True


@numba.njit("int64[::1](float32[::1], int64[::1])", cache=True, nogil=True)
def better_order(scores, ids):
    """Permutation ordering entries by score descending, then id ascending."""
    by_id = np.argsort(ids, kind="mergesort")
    return by_id[np.argsort(-scores[by_id], kind="mergesort")]


@numba.njit("int64(float32[::1], int64[::1], int64, int64[::1], boolean)", cache=True, nogil=True)
def _sort_distinct(scores, ids, count, candidate_keys, has_keys):
    """Sorts scores[:count]/ids[:count] best first, keeping the best entry per key
    when keys are given; returns the new count."""
    order = better_order(scores[:count], ids[:count])
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
    f"{EXCLUSION_ARGS}, boolean, {BOUNDS_ARGS}"
)


_TOPK_FINISH_ARGS = (
    "float32[:, ::1], int64[:, ::1], int64[::1], int64, float32[:, ::1], int64[:, ::1], int64[::1], boolean"
)


_VIOLATIONS_ARGS = (
    f"float32[:, ::1], int64, int64, float32[::1], float32, int64[::1], float64[::1], float32[::1], "
    f"int64[::1], {EXCLUSION_ARGS}"
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
        if not admits(query, s, upper, has_upper, lower, has_lower, exclusive):
            continue
        candidate = c0 + j
        if excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
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
        if excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
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
def topk_consume(
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
def topk_finish(kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys):
    for row in range(kept_scores.shape[0]):
        _topk_finish_row(row, kept_scores, kept_ids, counts, kept, out_scores, out_ids, candidate_keys, has_keys)


@numba.njit(f"void({_VIOLATIONS_ARGS})", cache=True, nogil=True)
def violations_consume(
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
def halves_to_float32(bits, out):
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
