// Plain views over caller-owned memory. Never includes Python.h: the core is
// usable from any host language, and the bindings are the only Python-aware code.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

// Rules shared by the CPU core and the CUDA kernels compile for both under nvcc.
#if defined(__CUDACC__)
#define HARDMINE_HOST_DEVICE __host__ __device__
#else
#define HARDMINE_HOST_DEVICE
#endif

namespace hardmine {

/// Element type of an embedding matrix as stored by the caller.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

/// A read-only 2-D matrix with arbitrary element strides (C order, Fortran
/// order, slices, negative steps), never copied as a whole.
struct MatrixView {
  const void* data = nullptr;  ///< address of element (0, 0)
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  ///< in elements, may be negative
  int64_t col_stride = 1;  ///< in elements, may be negative
  DType dtype = DType::F32;

  /// True when rows can be handed to BLAS as they are (fp32, unit column step).
  bool blas_ready() const {
    return dtype == DType::F32 && col_stride == 1 && row_stride >= cols;
  }
};

/// True when value is in the sorted range [first, last).
HARDMINE_HOST_DEVICE inline bool sorted_contains(const int64_t* first, const int64_t* last, int64_t value) {
  const int64_t* end = last;
  while (first < last) {
    const int64_t* mid = first + (last - first) / 2;
    if (*mid < value) first = mid + 1; else last = mid;
  }
  return first != end && *first == value;
}

/// Which candidates are not admissible for a query. All pointers may be null.
struct Exclusion {
  /// CSR: query q excludes indices[indptr[q] .. indptr[q+1]), sorted ascending.
  const int64_t* indptr = nullptr;
  const int64_t* indices = nullptr;
  /// Groups: query q excludes every candidate c with candidate_groups[c] == query_groups[q].
  const int64_t* query_groups = nullptr;
  const int64_t* candidate_groups = nullptr;
  /// Keys (e.g. a hash of each caption): query q excludes every candidate whose
  /// key is in key_indices[key_indptr[q] .. key_indptr[q+1]) (sorted), and a top-k
  /// keeps at most one candidate per key (the best-scoring one).
  const int64_t* candidate_keys = nullptr;
  const int64_t* key_indptr = nullptr;
  const int64_t* key_indices = nullptr;

  // Only called for candidates that beat the running threshold, so a binary
  // search here is cheaper than marking every excluded id in every tile.
  HARDMINE_HOST_DEVICE bool excludes(int64_t query, int64_t candidate) const {
    if (query_groups != nullptr && candidate_groups[candidate] == query_groups[query]) return true;
    if (indptr != nullptr &&
        sorted_contains(indices + indptr[query], indices + indptr[query + 1], candidate)) {
      return true;
    }
    return key_indptr != nullptr &&
           sorted_contains(key_indices + key_indptr[query], key_indices + key_indptr[query + 1],
                           candidate_keys[candidate]);
  }
};

/// Per-query score window a candidate must fall in (mining filters). Null = unbounded.
struct ScoreBounds {
  const float* upper = nullptr;  ///< (Q,): s <= upper[q], or s < upper[q] when exclusive
  const float* lower = nullptr;  ///< (Q,): s >= lower[q], or s > lower[q] when exclusive
  bool exclusive = false;        ///< strict bounds (the semi-hard band)

  HARDMINE_HOST_DEVICE bool admits(int64_t query, float score) const {
    if (upper != nullptr && !(exclusive ? score < upper[query] : score <= upper[query])) return false;
    if (lower != nullptr && !(exclusive ? score > lower[query] : score >= lower[query])) return false;
    return true;
  }
};

/// Optional per-row multipliers applied to the raw dot products (cosine).
struct RowScales {
  const float* queries = nullptr;     ///< (Q,) or null
  const float* candidates = nullptr;  ///< (C,) or null
};

/// Per-query tallies of scores beyond filter bounds (mining statistics), counted
/// over every scored candidate with vector compares.
struct FilterCounts {
  static constexpr int kMaxFilters = 6;
  int size = 0;
  const float* bound[kMaxFilters] = {};  ///< (Q,) per filter
  bool below[kMaxFilters] = {};          ///< count s < bound; otherwise s > bound
  int64_t* counts = nullptr;             ///< (Q, size) row-major, added to
};

/// Rows per query block and per candidate tile; 0 means "choose".
struct BlockSizes {
  int64_t query_rows = 0;
  int64_t candidate_rows = 0;
};

/// Raised when the host asked to stop (Ctrl-C); the host turns it into its own error.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

}  // namespace hardmine
