"""The Numba sampler kernels of the ``numba`` backend: ``count`` admissible candidates per row
drawn by seeded priority (uniform, or softmax by Gumbel-top-k) over one score tile, with the
C++ core's rules (``csrc/cpu/sample.cpp``): a heap per row of the highest priorities, one
entry per key under ``exclude_keys``, the same hash as :func:`hardmine._draws.uniform`."""

from __future__ import annotations

import numba
import numpy as np

from .._draws import kept_before, uniform_one
from .numba_kernels import BOUNDS_ARGS, EXCLUSION_ARGS, admits, better_order, excluded

_uniform = numba.njit("float64(uint64, int64, int64)", cache=True, nogil=True)(uniform_one)
_kept_before = numba.njit("boolean(float64, float32, int64, float64, float32, int64)", cache=True,
                          nogil=True)(kept_before)


@numba.njit("void(float64[::1], float32[::1], int64[::1], int64[::1], int64, int64)", cache=True, nogil=True)
def _swap(p, s, ids, keys, a, b):
    p[a], p[b] = p[b], p[a]
    s[a], s[b] = s[b], s[a]
    ids[a], ids[b] = ids[b], ids[a]
    keys[a], keys[b] = keys[b], keys[a]


@numba.njit("void(float64[::1], float32[::1], int64[::1], int64[::1], int64, int64)", cache=True, nogil=True)
def _sift_down(p, s, ids, keys, slot, size):
    """Restores the heap (root: the entry kept last) below ``slot``."""
    while True:
        worst = slot
        for child in (2 * slot + 1, 2 * slot + 2):
            if child < size and _kept_before(p[worst], s[worst], ids[worst], p[child], s[child], ids[child]):
                worst = child
        if worst == slot:
            return
        _swap(p, s, ids, keys, slot, worst)
        slot = worst


@numba.njit("void(float64[::1], float32[::1], int64[::1], int64[::1], int64)", cache=True, nogil=True)
def _sift_up(p, s, ids, keys, slot):
    while slot > 0:
        parent = (slot - 1) // 2
        if not _kept_before(p[parent], s[parent], ids[parent], p[slot], s[slot], ids[slot]):
            return
        _swap(p, s, ids, keys, parent, slot)
        slot = parent


@numba.njit("float64(float32[::1], float64, float64, boolean)", cache=True, nogil=True)
def _softmax_floor(scores, temperature, root, full):
    """The core's floor on u for softmax draws: below it no score of ``scores`` reaches the heap."""
    if not (temperature > 0) or not full:
        return 0.0
    best = -np.inf
    for t in range(scores.shape[0]):
        if scores[t] > best:
            best = scores[t]
    gap = root - np.float64(best) / temperature
    if not np.isfinite(gap):
        return 0.0
    gap -= 1e-6 * (1.0 + abs(gap))
    return np.exp(-np.exp(-gap))


_SAMPLE_ARGS = (
    f"float32[:, ::1], int64, int64, float64[:, ::1], float32[:, ::1], int64[:, ::1], int64[:, ::1], int64[::1], "
    f"uint64, float64, int64, int64, {EXCLUSION_ARGS}, boolean, {BOUNDS_ARGS}"
)


@numba.njit(f"void({_SAMPLE_ARGS})", cache=True, nogil=True)
def sample_consume(
    scores, q0, c0, heap_p, heap_s, heap_ids, heap_keys, sizes, seed, temperature, first_row, first_id,
    indptr, indices, has_csr, query_groups, candidate_groups, has_groups, candidate_keys, key_indptr, key_indices,
    has_key_exclusion, has_keys, upper, has_upper, lower, has_lower, exclusive,
):
    """The core's sampler over one score tile: per row a heap of the ``count`` highest
    priorities (uniform: -u; softmax: s / temperature + Gumbel(u)); with keys, one entry per
    key, its best candidate. A kept key is found by a linear search of the heap."""
    capacity = heap_p.shape[1]
    for row in range(scores.shape[0]):
        query = q0 + row
        p, s_kept, ids, keys = heap_p[row], heap_s[row], heap_ids[row], heap_keys[row]
        size = sizes[row]
        u_floor = 0.0
        for j in range(scores.shape[1]):
            if j % 256 == 0:
                u_floor = _softmax_floor(scores[row, j : j + 256], temperature, p[0], size == capacity)
            s = scores[row, j]
            if not s > -np.inf:
                continue
            if not admits(query, s, upper, has_upper, lower, has_lower, exclusive):
                continue
            candidate = c0 + j
            key = candidate_keys[candidate] if has_keys else first_id + candidate
            u = _uniform(seed, first_row + query, key)
            if u < u_floor:  # cannot reach the heap: no logarithm spent on it
                continue
            priority = np.float64(s) / temperature - np.log(-np.log(u)) if temperature > 0 else -u
            if size == capacity:
                if has_keys:
                    if priority < p[0]:
                        continue
                elif not _kept_before(priority, s, candidate, p[0], s_kept[0], ids[0]):
                    continue
            if excluded(query, candidate, indptr, indices, has_csr, query_groups, candidate_groups, has_groups,
                         candidate_keys, key_indptr, key_indices, has_key_exclusion):
                continue
            if has_keys:
                slot = -1
                for r in range(size):
                    if keys[r] == key:
                        slot = r
                        break
                if slot >= 0:
                    if s > s_kept[slot] or (s == s_kept[slot] and candidate < ids[slot]):
                        p[slot], s_kept[slot], ids[slot] = priority, s, candidate
                        _sift_down(p, s_kept, ids, keys, slot, size)
                    continue
                if size == capacity and not _kept_before(priority, s, candidate, p[0], s_kept[0], ids[0]):
                    continue
            if size == capacity:
                p[0], s_kept[0], ids[0], keys[0] = priority, s, candidate, key
                _sift_down(p, s_kept, ids, keys, 0, size)
            else:
                p[size], s_kept[size], ids[size], keys[size] = priority, s, candidate, key
                size += 1
                _sift_up(p, s_kept, ids, keys, size - 1)
        sizes[row] = size


@numba.njit("void(float64[:, ::1], float32[:, ::1], int64[:, ::1], int64[::1])", cache=True, nogil=True)
def sample_finish(heap_p, heap_s, heap_ids, sizes):
    """Each row's draws by score descending, ties by the smaller index; -1 / -inf padded."""
    for row in range(heap_p.shape[0]):
        size = sizes[row]
        order = better_order(heap_s[row, :size].copy(), heap_ids[row, :size].copy())
        p, s, ids = heap_p[row, :size][order], heap_s[row, :size][order], heap_ids[row, :size][order]
        heap_p[row, :size], heap_s[row, :size], heap_ids[row, :size] = p, s, ids
        heap_p[row, size:] = -np.inf
        heap_s[row, size:] = -np.inf
        heap_ids[row, size:] = -1
