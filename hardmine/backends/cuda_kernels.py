"""The numba-cuda kernels of the ``cupy`` backend: selection (top-k, and the seeded sampler as a
top-k by priority), exclusion, score filters and violation statistics over one score tile,
with the CPU engine's rules (ties by the smaller index, NaN and -inf never admitted, -1/-inf
padding, draws from the same counter-based hash).

Written at block level (one block per query row, ``syncthreads``, shared-memory reductions,
no warp intrinsics), so that the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs the very
same kernels in CI, where there is no GPU.

Selection: each row owns a buffer of ``k + tile columns`` entries in device memory. A tile
appends every admissible entry that beats the row's threshold (atomics); ``select_reduce``
then sorts the buffer (a block-wide bitonic sort in global memory; with candidate keys
first by key, keeping each key's best) and keeps the best ``k``, raising the threshold to the
k-th. Entries are ordered by (value desc, score desc, index asc), where value is the score
for top-k and the sampling priority for draws.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from .. import _draws as draws

#: threads per block; the simulator runs one Python thread per CUDA thread, so it gets few
THREADS = 8 if numba.config.ENABLE_CUDASIM else 256

TOP, DRAW_UNIFORM, DRAW_SOFTMAX = 0, 1, 2

_LAST = np.iinfo(np.int64).max
# the draw hash and the entry order of the CPU kernels, compiled for the device
uniform = cuda.jit(device=True)(draws.uniform_one)
kept_before = cuda.jit(device=True)(draws.kept_before)


@cuda.jit(device=True)
def sorted_contains(values, first, last, value):
    end = last
    while first < last:
        mid = (first + last) // 2
        if values[mid] < value:
            first = mid + 1
        else:
            last = mid
    return first < end and values[first] == value


@cuda.jit(device=True)
def excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
             candidate_keys, key_indptr, key_indices, has_key_exclusion):
    if has_groups and candidate_groups[candidate] == query_groups[query]:
        return True
    if has_csr and sorted_contains(indices, indptr[query], indptr[query + 1], candidate):
        return True
    return has_key_exclusion and sorted_contains(key_indices, key_indptr[query], key_indptr[query + 1],
                                                 candidate_keys[candidate])


@cuda.jit(device=True)
def admits(query, score, upper, has_upper, lower, has_lower, exclusive):
    if has_upper and not (score < upper[query] if exclusive else score <= upper[query]):
        return False
    if has_lower and not (score > lower[query] if exclusive else score >= lower[query]):
        return False
    return True


@cuda.jit
def select_consume(tile, j0, j1, q0, c0, mode, seed, temperature, first_row, first_id,
                   buf_v, buf_s, buf_i, buf_k, counts, thr_v, thr_s, thr_i,
                   indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                   candidate_keys, key_indptr, key_indices, has_key_exclusion, has_keys,
                   upper, has_upper, lower, has_lower, exclusive):
    """Appends each admissible entry of columns [j0, j1) of tile row ``blockIdx.x`` that beats the
    row's threshold. ``q0``: the tile's first query (rows of the per-query inputs); ``c0``: its
    first column's candidate index. Buffers and thresholds are indexed by tile row."""
    row = cuda.blockIdx.x
    query = q0 + row
    for j in range(j0 + cuda.threadIdx.x, j1, cuda.blockDim.x):
        s = tile[row, j]
        if not s > -math.inf:
            continue
        if not admits(query, s, upper, has_upper, lower, has_lower, exclusive):
            continue
        candidate = c0 + j
        key = candidate_keys[candidate] if has_keys else first_id + candidate
        value = np.float64(s)
        if mode != TOP:
            u = uniform(seed, first_row + query, key)
            value = np.float64(s) / temperature - math.log(-math.log(u)) if mode == DRAW_SOFTMAX else -u
        if has_keys and mode != TOP:
            # a key already kept has a value >= the threshold's, and so does a better candidate of it
            if value < thr_v[row]:
                continue
        elif not kept_before(value, s, candidate, thr_v[row], thr_s[row], thr_i[row]):
            continue
        if excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                    candidate_keys, key_indptr, key_indices, has_key_exclusion):
            continue
        slot = cuda.atomic.add(counts, row, 1)
        buf_v[row, slot] = value
        buf_s[row, slot] = s
        buf_i[row, slot] = candidate
        buf_k[row, slot] = key


@cuda.jit(device=True)
def _swap(buf_v, buf_s, buf_i, buf_k, row, a, b):
    buf_v[row, a], buf_v[row, b] = buf_v[row, b], buf_v[row, a]
    buf_s[row, a], buf_s[row, b] = buf_s[row, b], buf_s[row, a]
    buf_i[row, a], buf_i[row, b] = buf_i[row, b], buf_i[row, a]
    buf_k[row, a], buf_k[row, b] = buf_k[row, b], buf_k[row, a]


@cuda.jit(device=True)
def _first(buf_v, buf_s, buf_i, buf_k, row, a, b, by_key):
    """Whether entry a sorts before entry b (by key first when ``by_key``)."""
    if by_key and buf_k[row, a] != buf_k[row, b]:
        return buf_k[row, a] < buf_k[row, b]
    return kept_before(buf_v[row, a], buf_s[row, a], buf_i[row, a], buf_v[row, b], buf_s[row, b], buf_i[row, b])


@cuda.jit(device=True)
def _bitonic(buf_v, buf_s, buf_i, buf_k, row, width, by_key):
    """Block-wide bitonic sort of the row's first ``width`` (a power of two) entries."""
    size = 2
    while size <= width:
        stride = size // 2
        while stride > 0:
            for i in range(cuda.threadIdx.x, width, cuda.blockDim.x):
                partner = i ^ stride
                if partner > i:
                    ascending = (i & size) == 0
                    if _first(buf_v, buf_s, buf_i, buf_k, row, partner, i, by_key) == ascending:
                        _swap(buf_v, buf_s, buf_i, buf_k, row, i, partner)
            cuda.syncthreads()
            stride //= 2
        size *= 2


@cuda.jit
def select_reduce(k, width, final, buf_v, buf_s, buf_i, buf_k, counts, thr_v, thr_s, thr_i, has_keys):
    """Keeps the best ``k`` entries of buffer row ``blockIdx.x`` (one per key with keys), sorted,
    and raises the threshold to the k-th; ``final`` sorts even a short buffer. ``width`` is the
    buffer's power-of-two width."""
    row = cuda.blockIdx.x
    count = counts[row]
    if count <= k and not final and not has_keys:
        return
    used = 1  # only the power of two above the fill is sorted, not the whole buffer
    while used < count:
        used *= 2
    width = min(width, used)
    for i in range(count + cuda.threadIdx.x, width, cuda.blockDim.x):  # sentinels sort last
        buf_v[row, i] = -math.inf
        buf_s[row, i] = -math.inf
        buf_i[row, i] = _LAST
        buf_k[row, i] = _LAST
    cuda.syncthreads()
    if has_keys:
        _bitonic(buf_v, buf_s, buf_i, buf_k, row, width, True)
        for i in range(1 + cuda.threadIdx.x, count, cuda.blockDim.x):
            # not the first of its key: a sentinel (the key's best entry sorts first; keys are not written here)
            if buf_k[row, i] == buf_k[row, i - 1]:
                buf_v[row, i] = -math.inf
                buf_s[row, i] = -math.inf
                buf_i[row, i] = _LAST
        cuda.syncthreads()
    _bitonic(buf_v, buf_s, buf_i, buf_k, row, width, False)
    if cuda.threadIdx.x == 0:
        distinct = 0
        while distinct < count and buf_i[row, distinct] != _LAST:
            distinct += 1
        counts[row] = min(distinct, k)
        if distinct >= k:
            thr_v[row] = buf_v[row, k - 1]
            thr_s[row] = buf_s[row, k - 1]
            thr_i[row] = buf_i[row, k - 1]


@cuda.jit
def violations_consume(tile, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids,
                       indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                       candidate_keys, key_indptr, key_indices, has_key_exclusion):
    """Adds the violation count and hinge sum of tile row ``blockIdx.x`` and keeps its best
    (highest-scoring, then smallest index) admissible candidate: a shared-memory reduction."""
    local_count = cuda.shared.array(THREADS, numba.int64)
    local_hinge = cuda.shared.array(THREADS, numba.float64)
    local_best = cuda.shared.array(THREADS, numba.float32)
    local_id = cuda.shared.array(THREADS, numba.int64)
    row = cuda.blockIdx.x
    query = q0 + row
    t = cuda.threadIdx.x
    positive = positive_scores[query]
    threshold = np.float32(positive - margin)
    count = 0
    hinge = 0.0
    best = np.float32(-math.inf)
    best_id = _LAST
    for j in range(t, tile.shape[1], cuda.blockDim.x):
        s = tile[row, j]
        if not (s > threshold) and not (s > best):
            continue
        candidate = c0 + j
        if excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                    candidate_keys, key_indptr, key_indices, has_key_exclusion):
            continue
        if s > threshold:
            count += 1
            hinge += np.float64(margin) + np.float64(s) - np.float64(positive)
        if s > best:  # columns rise with j, so an equal score keeps the smaller index
            best = s
            best_id = candidate
    local_count[t] = count
    local_hinge[t] = hinge
    local_best[t] = best
    local_id[t] = best_id
    cuda.syncthreads()
    if t == 0:
        total = 0
        total_hinge = 0.0
        top = best_scores[query]
        top_id = best_ids[query]
        for other in range(cuda.blockDim.x):
            total += local_count[other]
            total_hinge += local_hinge[other]
            # an equal score keeps the smaller index (earlier tiles hold smaller ones)
            if local_best[other] > top or (local_best[other] == top and local_id[other] < top_id):
                top = local_best[other]
                top_id = local_id[other]
        counts[query] += total
        hinge_sums[query] += total_hinge
        best_scores[query] = top
        best_ids[query] = top_id
