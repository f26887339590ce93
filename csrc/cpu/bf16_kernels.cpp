// The bf16 path's kernels (bf16_kernels.hpp).
#include "bf16_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "hardmine/cpu_features.hpp"

namespace hardmine::bf16 {
namespace {

uint16_t to_bf16(float value) {  // round to nearest even; |value| <= 1, so no overflow
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float from_bf16(uint16_t code) {
  const uint32_t bits = static_cast<uint32_t>(code) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

void products_portable(const uint16_t* query_codes, int64_t padded, const uint16_t* panel, float* out) {
  for (int r = 0; r < int8::kRows; ++r) {
    const uint16_t* q = query_codes + r * padded;
    for (int l = 0; l < int8::kLanes; ++l) {
      float sum = 0;  // products of bf16 values are exact in float32: only the sums round
      for (int64_t i = 0; i < padded; ++i) sum += from_bf16(q[i]) * from_bf16(panel[(i / 2) * 64 + l * 2 + i % 2]);
      out[r * int8::kLanes + l] = sum;
    }
  }
}

#ifdef HARDMINE_X86
__attribute__((target("avx512f,avx512bf16"))) void products_avx512(const uint16_t* query_codes, int64_t padded,
                                                                   const uint16_t* panel, float* out) {
  __m512 acc[int8::kRows][2];
  for (int r = 0; r < int8::kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t step = 0; step < padded / 2; ++step) {
    const __m512bh low = (__m512bh)_mm512_loadu_si512(panel + step * 64);
    const __m512bh high = (__m512bh)_mm512_loadu_si512(panel + step * 64 + 32);
    for (int r = 0; r < int8::kRows; ++r) {
      int32_t two;
      std::memcpy(&two, query_codes + r * padded + step * 2, 4);
      const __m512bh q = (__m512bh)_mm512_set1_epi32(two);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], low, q);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], high, q);
    }
  }
  for (int r = 0; r < int8::kRows; ++r) {
    _mm512_storeu_ps(out + r * int8::kLanes, acc[r][0]);
    _mm512_storeu_ps(out + r * int8::kLanes + 16, acc[r][1]);
  }
}
#endif

bool has_bf16() {
#ifdef HARDMINE_X86
  return !int8::portable_forced() && HARDMINE_CPU_HAS("avx512f") && HARDMINE_CPU_HAS("avx512bf16");
#else
  return false;
#endif
}

}  // namespace

int8::RowFacts quantise(const float* x, int64_t d, int64_t padded, uint16_t* codes) {
  int8::RowFacts facts;
  const auto [peak, norm] = int8::row_peak(x, d);
  std::fill(codes, codes + padded, uint16_t{0});
  facts.norm = norm;
  if (!(peak > 0) || !std::isfinite(peak)) {  // zero (the caller falls back), or NaN/inf (untrusted)
    facts.residual = facts.norm;
    if (!std::isfinite(peak)) facts.norm = std::numeric_limits<double>::infinity();
    return facts;
  }
  int exponent = 0;
  std::frexp(peak, &exponent);  // peak in [2^(e-1), 2^e)
  facts.scale = std::ldexp(1.0, exponent);
  const double inverse = std::ldexp(1.0, -exponent);  // |e| <= 150: both exact in double
  double residual2 = 0, coded2 = 0;
  for (int64_t i = 0; i < d; ++i) {
    const double scaled = static_cast<double>(x[i]) * inverse;  // exact: a power of two, no underflow
    const uint16_t code = std::fabs(scaled) < 0x1p-126 ? uint16_t{0} : to_bf16(static_cast<float>(scaled));
    codes[i] = code;
    const double value = from_bf16(code);
    const double r = x[i] - value * facts.scale;  // A * code is exact in double
    residual2 += r * r;
    coded2 += value * value;
  }
  facts.residual = std::sqrt(residual2) * (1 + 0x1p-30) + 0x1p-1000;
  facts.coded = facts.scale * std::sqrt(coded2) * (1 + 0x1p-30);
  return facts;
}

#ifdef HARDMINE_X86
void (*const products)(const uint16_t*, int64_t, const uint16_t*, float*) =
    has_bf16() ? products_avx512 : products_portable;
#else
void (*const products)(const uint16_t*, int64_t, const uint16_t*, float*) = products_portable;
#endif

bool native() { return has_bf16(); }

}  // namespace hardmine::bf16
