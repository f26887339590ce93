// Selection and violation kernels over one fp32 score tile already on the device (computed by
// the array library's matmul, i.e. cuBLAS): the CUDA C++ twins of the numba-cuda kernels in
// hardmine/backends/cuda_kernels.py, with the rules shared with the CPU core (draws.hpp,
// views.hpp). One block per query row; block-level only (no warp intrinsics), so that the
// logic is the one the CUDA simulator checks in CI.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "hardmine/cuda.hpp"
#include "hardmine/draws.hpp"

namespace hardmine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kLast = INT64_MAX;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

__global__ void select_consume_kernel(const float* tile, int64_t cols, int64_t ld, int64_t q0, int64_t c0,
                                      int mode, SampleRule rule, Selection sel, Exclusion exclusion,
                                      ScoreBounds bounds) {
  const int64_t row = blockIdx.x;
  const int64_t query = q0 + row;
  const bool has_keys = exclusion.candidate_keys != nullptr;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float s = tile[row * ld + j];
    if (!(s > -INFINITY) || !bounds.admits(query, s)) continue;
    const int64_t candidate = c0 + j;
    const int64_t key = has_keys ? exclusion.candidate_keys[candidate] : rule.first_id + candidate;
    double value = s;
    if (mode != kTop) {
      const double u = draw_of(rule.seed, rule.first_row + query, key);
      value = mode == kDrawSoftmax ? static_cast<double>(s) / rule.temperature - log(-log(u)) : -u;
    }
    if (has_keys && mode != kTop) {
      // a key already kept has a value >= the threshold's, and so does a better candidate of it
      if (value < sel.thr_values[row]) continue;
    } else if (!kept_before(value, s, candidate, sel.thr_values[row], sel.thr_scores[row], sel.thr_ids[row])) {
      continue;
    }
    if (exclusion.excludes(query, candidate)) continue;
    const int64_t slot = static_cast<int64_t>(
        atomicAdd(reinterpret_cast<unsigned long long*>(sel.counts + row), 1ULL));
    const int64_t at = row * sel.width + slot;
    sel.values[at] = value;
    sel.scores[at] = s;
    sel.ids[at] = candidate;
    sel.keys[at] = key;
  }
}

__device__ bool sorts_first(const Selection& sel, int64_t a, int64_t b, bool by_key) {
  if (by_key && sel.keys[a] != sel.keys[b]) return sel.keys[a] < sel.keys[b];
  return kept_before(sel.values[a], sel.scores[a], sel.ids[a], sel.values[b], sel.scores[b], sel.ids[b]);
}

__device__ void swap_entries(const Selection& sel, int64_t a, int64_t b) {
  const double v = sel.values[a];
  sel.values[a] = sel.values[b];
  sel.values[b] = v;
  const float s = sel.scores[a];
  sel.scores[a] = sel.scores[b];
  sel.scores[b] = s;
  const int64_t i = sel.ids[a];
  sel.ids[a] = sel.ids[b];
  sel.ids[b] = i;
  const int64_t k = sel.keys[a];
  sel.keys[a] = sel.keys[b];
  sel.keys[b] = k;
}

// Block-wide bitonic sort of one row's first `width` (a power of two) entries in device memory.
__device__ void bitonic(const Selection& sel, int64_t base, int64_t width, bool by_key) {
  for (int64_t size = 2; size <= width; size *= 2) {
    for (int64_t stride = size / 2; stride > 0; stride /= 2) {
      for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
        const int64_t partner = i ^ stride;
        if (partner > i) {
          const bool ascending = (i & size) == 0;
          if (sorts_first(sel, base + partner, base + i, by_key) == ascending) {
            swap_entries(sel, base + i, base + partner);
          }
        }
      }
      __syncthreads();
    }
  }
}

__global__ void select_reduce_kernel(int64_t k, bool final, Selection sel, bool has_keys) {
  const int64_t row = blockIdx.x;
  const int64_t base = row * sel.width;
  const int64_t count = sel.counts[row];
  if (count <= k && !final && !has_keys) return;
  int64_t width = 1;  // only the power of two above the fill is sorted, not the whole buffer
  while (width < count) width *= 2;
  if (width > sel.width) width = sel.width;
  for (int64_t i = count + threadIdx.x; i < width; i += blockDim.x) {  // sentinels sort last
    sel.values[base + i] = -INFINITY;
    sel.scores[base + i] = -INFINITY;
    sel.ids[base + i] = kLast;
    sel.keys[base + i] = kLast;
  }
  __syncthreads();
  if (has_keys) {
    bitonic(sel, base, width, true);
    for (int64_t i = 1 + threadIdx.x; i < count; i += blockDim.x) {
      // not the first of its key: a sentinel (keys are only read here)
      if (sel.keys[base + i] == sel.keys[base + i - 1]) {
        sel.values[base + i] = -INFINITY;
        sel.scores[base + i] = -INFINITY;
        sel.ids[base + i] = kLast;
      }
    }
    __syncthreads();
  }
  bitonic(sel, base, width, false);
  if (threadIdx.x == 0) {
    int64_t distinct = 0;
    while (distinct < count && sel.ids[base + distinct] != kLast) ++distinct;
    sel.counts[row] = distinct < k ? distinct : k;
    if (distinct >= k) {
      sel.thr_values[row] = sel.values[base + k - 1];
      sel.thr_scores[row] = sel.scores[base + k - 1];
      sel.thr_ids[row] = sel.ids[base + k - 1];
    }
  }
}

__global__ void violations_kernel(const float* tile, int64_t cols, int64_t ld, int64_t q0, int64_t c0,
                                  const float* positive_scores, float margin, int64_t* counts, double* hinge_sums,
                                  float* best_scores, int64_t* best_ids, Exclusion exclusion) {
  __shared__ int64_t local_count[kThreads];
  __shared__ double local_hinge[kThreads];
  __shared__ float local_best[kThreads];
  __shared__ int64_t local_id[kThreads];
  const int64_t row = blockIdx.x;
  const int64_t query = q0 + row;
  const int t = threadIdx.x;
  const float positive = positive_scores[query];
  const float threshold = positive - margin;
  int64_t count = 0;
  double hinge = 0.0;
  float best = -INFINITY;
  int64_t best_id = kLast;
  for (int64_t j = t; j < cols; j += blockDim.x) {
    const float s = tile[row * ld + j];
    if (!(s > threshold) && !(s > best)) continue;
    const int64_t candidate = c0 + j;
    if (exclusion.excludes(query, candidate)) continue;
    if (s > threshold) {
      ++count;
      hinge += static_cast<double>(margin) + static_cast<double>(s) - static_cast<double>(positive);
    }
    if (s > best) {  // columns rise with j, so an equal score keeps the smaller index
      best = s;
      best_id = candidate;
    }
  }
  local_count[t] = count;
  local_hinge[t] = hinge;
  local_best[t] = best;
  local_id[t] = best_id;
  __syncthreads();
  if (t == 0) {
    int64_t total = 0;
    double total_hinge = 0.0;
    float top = best_scores[query];
    int64_t top_id = best_ids[query];
    for (int other = 0; other < blockDim.x; ++other) {
      total += local_count[other];
      total_hinge += local_hinge[other];
      if (local_best[other] > top || (local_best[other] == top && local_id[other] < top_id)) {
        top = local_best[other];
        top_id = local_id[other];
      }
    }
    counts[query] += total;
    hinge_sums[query] += total_hinge;
    best_scores[query] = top;
    best_ids[query] = top_id;
  }
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

}  // namespace

void select_consume(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t q0, int64_t c0, int mode,
                    const SampleRule& rule, const Selection& selection, const Exclusion& exclusion,
                    const ScoreBounds& bounds, uintptr_t stream) {
  if (rows == 0 || cols == 0) return;
  select_consume_kernel<<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(
      tile, cols, ld, q0, c0, mode, rule, selection, exclusion, bounds);
  check(cudaGetLastError(), "select_consume launch");
}

void select_reduce(int64_t rows, int64_t k, bool final, const Selection& selection, bool has_keys,
                   uintptr_t stream) {
  if (rows == 0) return;
  select_reduce_kernel<<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(k, final, selection,
                                                                                          has_keys);
  check(cudaGetLastError(), "select_reduce launch");
}

void violations(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t q0, int64_t c0,
                const float* positive_scores, float margin, int64_t* counts, double* hinge_sums, float* best_scores,
                int64_t* best_ids, const Exclusion& exclusion, uintptr_t stream) {
  if (rows == 0 || cols == 0) return;
  violations_kernel<<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(
      tile, cols, ld, q0, c0, positive_scores, margin, counts, hinge_sums, best_scores, best_ids, exclusion);
  check(cudaGetLastError(), "violations launch");
}

}  // namespace hardmine::cuda
