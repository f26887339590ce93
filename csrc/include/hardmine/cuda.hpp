// Host-side entry points of the CUDA core. Plain C++: the bindings include this
// without the CUDA toolkit headers.
#pragma once

#include <cstdint>
#include <string>

#include "hardmine/engine.hpp"
#include "hardmine/views.hpp"

namespace hardmine::cuda {

/// What a selection keeps: the score (top-k) or a seeded priority (draws, as SampleRule says).
enum Mode : int { kTop = 0, kDrawUniform = 1, kDrawSoftmax = 2 };

/// One query block's running selection, in device memory: per row a buffer of `width` (a
/// power of two >= k + tile columns) entries, its fill count and the k-th entry so far.
struct Selection {
  double* values = nullptr;  ///< (rows, width)
  float* scores = nullptr;   ///< (rows, width)
  int64_t* ids = nullptr;    ///< (rows, width)
  int64_t* keys = nullptr;   ///< (rows, width)
  int64_t* counts = nullptr;      ///< (rows,)
  double* thr_values = nullptr;   ///< (rows,) threshold entry
  float* thr_scores = nullptr;    ///< (rows,)
  int64_t* thr_ids = nullptr;     ///< (rows,)
  int64_t width = 0;
};

/// Appends every admissible entry of the (rows, cols) device tile (row step ld) that beats its
/// row's threshold. q0: the tile's first query (per-query arrays); c0: its first candidate.
/// Exclusion and bounds pointers are device pointers. Asynchronous on `stream`.
void select_consume(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t q0, int64_t c0, int mode,
                    const SampleRule& rule, const Selection& selection, const Exclusion& exclusion,
                    const ScoreBounds& bounds, uintptr_t stream);

/// Keeps each row's best k (one per key when has_keys), sorted, and raises the threshold;
/// `final` sorts even a short buffer.
void select_reduce(int64_t rows, int64_t k, bool final, const Selection& selection, bool has_keys,
                   uintptr_t stream);

/// Adds the tile's violation counts and hinge sums and keeps each row's best candidate.
void violations(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t q0, int64_t c0,
                const float* positive_scores, float margin, int64_t* counts, double* hinge_sums, float* best_scores,
                int64_t* best_ids, const Exclusion& exclusion, uintptr_t stream);

/// Number of visible CUDA devices; 0 when there is no driver or device.
/// @param[out] reason  why no device is usable, empty otherwise
int device_count(std::string* reason);

/// CUDA runtime version the module was built against, e.g. 13000.
int runtime_version();

/// out[i] = dot(a row i, b row i) for two host (n, d) fp32 row-major matrices,
/// computed on device 0. Throws std::runtime_error with the CUDA message on failure.
void row_dot(const float* a, const float* b, int64_t rows, int64_t dim, float* out);

}  // namespace hardmine::cuda
