// Plain views over caller-owned memory. Never includes Python.h: the core is
// usable from any host language, and the bindings are the only Python-aware code.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

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

/// Which candidates are not admissible for a query. All pointers may be null.
struct Exclusion {
  /// CSR: query q excludes indices[indptr[q] .. indptr[q+1]), sorted ascending.
  const int64_t* indptr = nullptr;
  const int64_t* indices = nullptr;
  /// Groups: query q excludes every candidate c with candidate_groups[c] == query_groups[q].
  const int64_t* query_groups = nullptr;
  const int64_t* candidate_groups = nullptr;

  bool excludes(int64_t query, int64_t candidate) const {
    if (query_groups != nullptr && candidate_groups[candidate] == query_groups[query]) return true;
    if (indptr != nullptr) {
      // Only called for candidates that beat the running threshold, so a binary
      // search here is cheaper than marking every excluded id in every tile.
      const int64_t* lo = indices + indptr[query];
      const int64_t* hi = indices + indptr[query + 1];
      while (lo < hi) {
        const int64_t* mid = lo + (hi - lo) / 2;
        if (*mid < candidate) lo = mid + 1; else hi = mid;
      }
      return lo != indices + indptr[query + 1] && *lo == candidate;
    }
    return false;
  }
};

/// Optional per-row multipliers applied to the raw dot products (cosine).
struct RowScales {
  const float* queries = nullptr;     ///< (Q,) or null
  const float* candidates = nullptr;  ///< (C,) or null
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
