// The int8 path's kernels (int8_kernels.cpp), dispatched once at load time to AVX-512
// (VNNI for the products) or portable versions; used by certified.cpp only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace hardmine::int8 {

constexpr int kRows = 12;   // queries per micro-kernel block
constexpr int kLanes = 32;  // candidates per packed panel
constexpr float kInf = std::numeric_limits<float>::infinity();

/// A row's int8 codes (x ~ A * code) and what the certified bound needs of it.
struct RowFacts {
  double scale = 0;     ///< A, a float32 value: x^ = A * code exactly (0: the row is (nearly) zero)
  double norm = 0;      ///< ||x||, rounded up
  double residual = 0;  ///< ||x - x^||, rounded up
  double coded = 0;     ///< ||x^||, rounded up
  int32_t code_sum = 0;
};

/// HARDMINE_INT8_PORTABLE=1 selects the portable int8 and bf16 kernels, so that the test suite
/// checks them on a machine that has AVX-512.
bool portable_forced();

/// A row's largest magnitude and its norm (float64 sums, rounded up): where both quantisers start.
struct RowPeak {
  double peak = 0;
  double norm = 0;
};
RowPeak row_peak(const float* x, int64_t d);

/// The per-row inputs of the screen for one micro-kernel block.
struct ScreenRows {
  int rows = 0;
  int32_t offset[kRows] = {};   ///< 128 * the sum of the query's codes (the unsigned candidate codes' bias)
  float norm[kRows] = {};       ///< ||q|| / A_q, rounded up
  float residual[kRows] = {};   ///< ||q - q^|| / A_q, rounded up
  float threshold[kRows] = {};  ///< the query's k-th best lower bound (+inf: skip the row)
  bool every_lane = false;      ///< store every row's bounds, not only those with a passing lane
};

/// The smallest float32 >= x.
inline float float_up(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) < x) f = std::nextafter(f, kInf);
  return f;
}

/// The largest float32 <= x.
inline float float_down(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) > x) f = std::nextafter(f, -kInf);
  return f;
}

/// Quantises x[0, d) into codes[0, padded) (zeros past d).
extern RowFacts (*const quantise)(const float* x, int64_t d, int64_t padded, int8_t* codes);

/// products[r * 32 + l] = sum_i query_codes[r * padded + i] * panel code (lane l, i), the panel's
/// codes stored as [padded / 4][32 lanes][4] unsigned bytes, code + 128.
extern void (*const products)(const int8_t* query_codes, int64_t padded, const uint8_t* panel, int32_t* out);

/// masks[r] bit l: lane l's upper bound reaches row r's threshold; for such rows every lane's
/// bounds are in uppers/lowers[r * 32 + l] (docs/precision.md). scale, residual, coded: the
/// panel's 32 candidate factors in the frame.
extern void (*const screen)(const int32_t* products, const ScreenRows& rows, const float* scale,
                            const float* residual, const float* coded, int valid, uint32_t* masks, float* uppers,
                            float* lowers);

/// screen() for float32 sums (the bf16 path's products; the offsets are 0).
extern void (*const screen_sums)(const float* products, const ScreenRows& rows, const float* scale,
                                 const float* residual, const float* coded, int valid, uint32_t* masks,
                                 float* uppers, float* lowers);

/// A filter's tally over one row of 32 lanes: yes_mask = lanes certainly beyond the bound,
/// unsure_mask = lanes that may be either way (to re-score). For a count of s > bound
/// (above): yes when lower >= yes_at, certainly not when upper <= no_at; for s < bound: yes when
/// upper <= yes_at, certainly not when lower >= no_at.
extern void (*const classify)(const float* uppers, const float* lowers, int valid, bool above, float yes_at,
                              float no_at, uint32_t* yes_mask, uint32_t* unsure_mask);

/// sum a[i] * b[i] over float32 rows with float64 products (exact) and float64 sums, in the one
/// order of additions of docs/precision.md ("Exact scores"), whichever kernel runs.
extern double (*const exact_dot)(const float* a, const float* b, int64_t d);

/// The exact score (docs/precision.md, "Exact scores") of a dot product `dot` (exact_dot) and,
/// under cosine, the two rows' squared norms (exact_dot of each row with itself): the float64
/// operations sign(D) sqrt(q / S_q), q = D D / S_c taken from D D = hi + lo and hi = r S_c + e,
/// both exact (fused multiply-adds), as r + (e + lo) / S_c: the real quotient as it rounds save
/// within ~2^-100 of a tie between two floats. So collinear rows whose sums are exact (integer
/// rows, any rows at d = 1) have equal scores, and ties go by index alike on every path; the
/// reference backend repeats these operations in NumPy (hardmine/_exact.py, Dekker's products).
inline double exact_score(double dot, double query_norm2, double candidate_norm2, bool cosine) {
  if (!cosine) return dot;
  const double hi = dot * dot;
  const double lo = std::fma(dot, dot, -hi);
  const double r = hi / candidate_norm2;
  const double e = std::fma(-r, candidate_norm2, hi);
  const double quotient = r + (e + lo) / candidate_norm2;
  return std::copysign(std::sqrt(quotient / query_norm2), dot);
}

/// True when the products kernel is the AVX-512 VNNI one.
bool native();

}  // namespace hardmine::int8
