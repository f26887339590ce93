// The int8 path's kernels: quantisation, the int8 products of 12 queries x 32 candidates, the
// bound screen and the exact float64 dot product, each in an AVX-512 and a portable version.
#include "int8_kernels.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "hardmine/cpu_features.hpp"

namespace hardmine::int8 {

// Read at load time (the kernels are chosen once).
bool portable_forced() {
  const char* value = std::getenv("HARDMINE_INT8_PORTABLE");
  return value != nullptr && value[0] == '1';
}

RowPeak row_peak(const float* x, int64_t d) {
  double peak = 0, norm2 = 0;
  for (int64_t i = 0; i < d; ++i) {
    peak = std::max(peak, std::fabs(static_cast<double>(x[i])));
    norm2 += static_cast<double>(x[i]) * x[i];
  }
  return {peak, std::sqrt(norm2) * (1 + 1e-12)};
}

namespace {

// float32 slack factors of the screen (docs/precision.md): the bound's own rounding (64 u), the
// approximation's rounding (16 u) and underflow (an absolute 2^-100).
const float kBoundFactor = 1.0f + std::ldexp(1.0f, -18);
const float kApproxFactor = std::ldexp(1.0f, -20);
const float kAbsolute = std::ldexp(1.0f, -100);

// Quantises one row into codes[0, padded) (zeros past d) and returns what the bound needs.
RowFacts quantise_portable(const float* x, int64_t d, int64_t padded, int8_t* codes) {
  RowFacts facts;
  const auto [peak, norm] = row_peak(x, d);
  std::fill(codes, codes + padded, int8_t{0});
  facts.norm = norm;
  const float scale = static_cast<float>(peak / 127.0);
  if (scale == 0) {  // all zero, or too small to scale: x^ = 0 and the residual is x itself
    facts.residual = facts.norm;
    return facts;
  }
  facts.scale = scale;
  double residual2 = 0, coded2 = 0;
  for (int64_t i = 0; i < d; ++i) {
    const double code = std::clamp(std::nearbyint(x[i] / static_cast<double>(scale)), -127.0, 127.0);
    codes[i] = static_cast<int8_t>(code);
    facts.code_sum += static_cast<int32_t>(code);
    const double r = x[i] - static_cast<double>(scale) * code;  // scale * code is exact in double
    residual2 += r * r;
    coded2 += code * code;
  }
  // float64 rounding of these sums is far below the 2^-30 they are inflated by
  facts.residual = std::sqrt(residual2) * (1 + 0x1p-30) + 0x1p-1000;
  facts.coded = static_cast<double>(scale) * std::sqrt(coded2) * (1 + 0x1p-30);
  return facts;
}


// products[r * 32 + l] = sum_i query_codes[r][i] * (code_l[i] + 128), for r < 12 and l < 32.
void int8_products_portable(const int8_t* query_codes, int64_t padded, const uint8_t* panel, int32_t* products) {
  for (int r = 0; r < kRows; ++r) {
    const int8_t* q = query_codes + r * padded;
    for (int l = 0; l < kLanes; ++l) {
      int32_t sum = 0;
      for (int64_t i = 0; i < padded; ++i) sum += q[i] * static_cast<int32_t>(panel[(i / 4) * kLanes * 4 + l * 4 + i % 4]);
      products[r * kLanes + l] = sum;
    }
  }
}

// masks[r] bit l: lane l's upper bound reaches row r's threshold; for such rows every lane's
// bounds are in uppers/lowers[r * 32 + l]. The bound of docs/precision.md, in float32.
// Products: int32 sums of codes (int8, less the row's offset) or float32 sums (bf16).
template <class Product>
void screen_portable(const Product* products, const ScreenRows& in, const float* scale, const float* residual,
                     const float* coded, int valid, uint32_t* masks, float* uppers, float* lowers) {
  for (int r = 0; r < in.rows; ++r) {
    masks[r] = 0;
    for (int l = 0; l < valid; ++l) {
      const float approx = static_cast<float>(products[r * kLanes + l] - in.offset[r]) * scale[l];
      const float bound = in.norm[r] * residual[l] + in.residual[r] * coded[l];
      const float slack = bound * kBoundFactor + (std::fabs(approx) * kApproxFactor + kAbsolute);
      uppers[r * kLanes + l] = approx + slack;
      lowers[r * kLanes + l] = approx - slack;
      if (approx + slack >= in.threshold[r]) masks[r] |= 1u << l;
    }
  }
}

#ifdef HARDMINE_X86
// quantise_portable with 16 values per step: the codes may round differently (float32 x / A), the
// facts are those of the codes chosen, computed exactly as there (float64 products and sums).
__attribute__((target("avx512f,avx512bw"))) RowFacts quantise_avx512(const float* x, int64_t d, int64_t padded,
                                                                    int8_t* codes) {
  RowFacts facts;
  std::fill(codes, codes + padded, int8_t{0});
  __m512 peak = _mm512_setzero_ps();
  __m512d norm2 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    peak = _mm512_max_ps(peak, _mm512_abs_ps(v));
    const __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    norm2 = _mm512_fmadd_pd(low, low, _mm512_fmadd_pd(high, high, norm2));
  }
  double peak_value = _mm512_reduce_max_ps(peak), norm_value = _mm512_reduce_add_pd(norm2);
  for (int64_t t = i; t < d; ++t) {
    peak_value = std::max(peak_value, std::fabs(static_cast<double>(x[t])));
    norm_value += static_cast<double>(x[t]) * x[t];
  }
  facts.norm = std::sqrt(norm_value) * (1 + 1e-12);
  const float scale = static_cast<float>(peak_value / 127.0);
  if (scale == 0) {
    facts.residual = facts.norm;
    return facts;
  }
  facts.scale = scale;
  const __m512 inverse = _mm512_set1_ps(1.0f / scale);
  const __m512d scale_d = _mm512_set1_pd(scale);
  const __m512 limit = _mm512_set1_ps(127.0f);
  __m512d residual2 = _mm512_setzero_pd();
  __m512i sum = _mm512_setzero_si512(), coded2 = _mm512_setzero_si512();
  for (i = 0; i + 16 <= d; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 rounded = _mm512_roundscale_ps(_mm512_mul_ps(v, inverse), _MM_FROUND_TO_NEAREST_INT |
                                                                                _MM_FROUND_NO_EXC);
    const __m512 code = _mm512_max_ps(_mm512_min_ps(rounded, limit), _mm512_sub_ps(_mm512_setzero_ps(), limit));
    const __m512i whole = _mm512_cvtps_epi32(code);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(whole));
    sum = _mm512_add_epi32(sum, whole);
    coded2 = _mm512_add_epi32(coded2, _mm512_mullo_epi32(whole, whole));
    for (int half = 0; half < 2; ++half) {  // r = x - A code in float64: A code is exact there
      const __m256 part_v = half ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                                 : _mm512_castps512_ps256(v);
      const __m256 part_c = half ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(code), 1))
                                 : _mm512_castps512_ps256(code);
      const __m512d r = _mm512_fnmadd_pd(scale_d, _mm512_cvtps_pd(part_c), _mm512_cvtps_pd(part_v));
      residual2 = _mm512_fmadd_pd(r, r, residual2);
    }
  }
  double residual_value = _mm512_reduce_add_pd(residual2);
  int64_t code_sum = _mm512_reduce_add_epi32(sum), coded_value = _mm512_reduce_add_epi32(coded2);
  for (; i < d; ++i) {
    const double code = std::clamp(std::nearbyint(x[i] / static_cast<double>(scale)), -127.0, 127.0);
    codes[i] = static_cast<int8_t>(code);
    code_sum += static_cast<int64_t>(code);
    coded_value += static_cast<int64_t>(code * code);
    const double r = x[i] - static_cast<double>(scale) * code;
    residual_value += r * r;
  }
  facts.code_sum = static_cast<int32_t>(code_sum);
  facts.residual = std::sqrt(residual_value) * (1 + 0x1p-30) + 0x1p-1000;
  facts.coded = static_cast<double>(scale) * std::sqrt(static_cast<double>(coded_value)) * (1 + 0x1p-30);
  return facts;
}
#endif

void classify_portable(const float* uppers, const float* lowers, int valid, bool above, float yes_at, float no_at,
                       uint32_t* yes_mask, uint32_t* unsure_mask) {
  uint32_t yes = 0, no = 0;
  for (int l = 0; l < valid; ++l) {
    yes |= static_cast<uint32_t>(above ? lowers[l] >= yes_at : uppers[l] <= yes_at) << l;
    no |= static_cast<uint32_t>(above ? uppers[l] <= no_at : lowers[l] >= no_at) << l;
  }
  const uint32_t inside = valid >= 32 ? ~0u : (1u << valid) - 1;
  *yes_mask = yes & inside;
  *unsure_mask = inside & ~yes & ~no;
}

// The exact dot product's one order of additions (docs/precision.md, "Exact scores"): 16 lanes,
// lane j summing the products at i = j (mod 16) by increasing i, then the lanes folded
// j + (j + 8), j + (j + 4), j + (j + 2), 0 + 1. One source, compiled for each instruction set
// (below): without -ffast-math the compiler keeps every addition as written, and a product of
// float32 values is exact in float64, so a fused multiply-add rounds as the addition alone:
// every kernel, and the reference backend's NumPy (backends/reference.py), gives the same bits.
__attribute__((always_inline)) inline double exact_dot_lanes(const float* a, const float* b, int64_t d) {
  double lane[16] = {};
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    for (int j = 0; j < 16; ++j) lane[j] += static_cast<double>(a[i + j]) * b[i + j];
  }
  for (int j = 0; i + j < d; ++j) lane[j] += static_cast<double>(a[i + j]) * b[i + j];
  for (int width = 8; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lane[j] = lane[j] + lane[j + width];
  }
  return lane[0];
}

double exact_dot_portable(const float* a, const float* b, int64_t d) { return exact_dot_lanes(a, b, d); }

#ifdef HARDMINE_X86
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void int8_products_vnni(
    const int8_t* query_codes, int64_t padded, const uint8_t* panel, int32_t* products) {
  __m512i acc[kRows][2];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int64_t step = 0; step < padded / 4; ++step) {
    const __m512i low = _mm512_loadu_si512(panel + step * 128);
    const __m512i high = _mm512_loadu_si512(panel + step * 128 + 64);
    for (int r = 0; r < kRows; ++r) {
      int32_t four;
      std::memcpy(&four, query_codes + r * padded + step * 4, 4);
      const __m512i q = _mm512_set1_epi32(four);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], low, q);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], high, q);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    _mm512_store_si512(products + r * kLanes, acc[r][0]);
    _mm512_store_si512(products + r * kLanes + 16, acc[r][1]);
  }
}

template <class Product>
__attribute__((target("avx512f"))) void screen_avx512(const Product* products, const ScreenRows& in,
                                                     const float* scale, const float* residual, const float* coded,
                                                     int valid, uint32_t* masks, float* uppers, float* lowers) {
  const __m512 bound_factor = _mm512_set1_ps(kBoundFactor), approx_factor = _mm512_set1_ps(kApproxFactor);
  const __m512 absolute = _mm512_set1_ps(kAbsolute);
  __m512 lane_scale[2], lane_residual[2], lane_coded[2];
  __mmask16 inside[2];
  for (int half = 0; half < 2; ++half) {  // the candidates' factors, loaded once for the 12 rows
    const int base = 16 * half;
    inside[half] = valid - base >= 16 ? 0xffff : valid <= base ? 0 : static_cast<__mmask16>((1u << (valid - base)) - 1);
    lane_scale[half] = _mm512_loadu_ps(scale + base);
    lane_residual[half] = _mm512_loadu_ps(residual + base);
    lane_coded[half] = _mm512_loadu_ps(coded + base);
  }
  for (int r = 0; r < in.rows; ++r) {
    const __m512 norm = _mm512_set1_ps(in.norm[r]), res = _mm512_set1_ps(in.residual[r]);
    const __m512 limit = _mm512_set1_ps(in.threshold[r]);
    const __m512i offset = _mm512_set1_epi32(in.offset[r]);
    uint32_t mask = 0;
    __m512 upper[2], lower[2];
    for (int half = 0; half < 2; ++half) {
      __m512 sum;
      if constexpr (std::is_same_v<Product, float>) {
        sum = _mm512_loadu_ps(products + r * kLanes + 16 * half);
      } else {
        sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(products + r * kLanes + 16 * half), offset));
      }
      const __m512 approx = _mm512_mul_ps(sum, lane_scale[half]);
      const __m512 bound = _mm512_add_ps(_mm512_mul_ps(norm, lane_residual[half]), _mm512_mul_ps(res, lane_coded[half]));
      const __m512 slack = _mm512_add_ps(_mm512_mul_ps(bound, bound_factor),
                                         _mm512_add_ps(_mm512_mul_ps(_mm512_abs_ps(approx), approx_factor), absolute));
      upper[half] = _mm512_add_ps(approx, slack);
      lower[half] = _mm512_sub_ps(approx, slack);
      mask |= static_cast<uint32_t>(_mm512_mask_cmp_ps_mask(inside[half], upper[half], limit, _CMP_GE_OQ)) << (16 * half);
    }
    masks[r] = mask;
    if (mask == 0 && !in.every_lane) continue;
    for (int half = 0; half < 2; ++half) {
      _mm512_storeu_ps(uppers + r * kLanes + 16 * half, upper[half]);
      _mm512_storeu_ps(lowers + r * kLanes + 16 * half, lower[half]);
    }
  }
}

__attribute__((target("avx512f"))) void classify_avx512(const float* uppers, const float* lowers, int valid,
                                                        bool above, float yes_at, float no_at, uint32_t* yes_mask,
                                                        uint32_t* unsure_mask) {
  const __m512 yes_limit = _mm512_set1_ps(yes_at), no_limit = _mm512_set1_ps(no_at);
  uint32_t yes = 0, no = 0;
  for (int half = 0; half < 2; ++half) {
    const __m512 upper = _mm512_loadu_ps(uppers + 16 * half), lower = _mm512_loadu_ps(lowers + 16 * half);
    const __mmask16 y = above ? _mm512_cmp_ps_mask(lower, yes_limit, _CMP_GE_OQ)
                              : _mm512_cmp_ps_mask(upper, yes_limit, _CMP_LE_OQ);
    const __mmask16 n = above ? _mm512_cmp_ps_mask(upper, no_limit, _CMP_LE_OQ)
                              : _mm512_cmp_ps_mask(lower, no_limit, _CMP_GE_OQ);
    yes |= static_cast<uint32_t>(y) << (16 * half);
    no |= static_cast<uint32_t>(n) << (16 * half);
  }
  const uint32_t inside = valid >= 32 ? ~0u : (1u << valid) - 1;
  *yes_mask = yes & inside;
  *unsure_mask = inside & ~yes & ~no;
}

__attribute__((target("avx512f"))) double exact_dot_avx512(const float* a, const float* b, int64_t d) {
  return exact_dot_lanes(a, b, d);
}

__attribute__((target("avx2,fma"))) double exact_dot_avx2(const float* a, const float* b, int64_t d) {
  return exact_dot_lanes(a, b, d);
}
#endif

using ProductsFn = void (*)(const int8_t*, int64_t, const uint8_t*, int32_t*);
using ScreenFn = void (*)(const int32_t*, const ScreenRows&, const float*, const float*, const float*, int,
                          uint32_t*, float*, float*);
using DotFn = double (*)(const float*, const float*, int64_t);
using QuantiseFn = RowFacts (*)(const float*, int64_t, int64_t, int8_t*);

bool has_vnni() {
  return !portable_forced() && HARDMINE_CPU_HAS("avx512f") && HARDMINE_CPU_HAS("avx512bw") &&
         HARDMINE_CPU_HAS("avx512vnni");
}

#ifdef HARDMINE_X86
bool has_avx512() { return !portable_forced() && HARDMINE_CPU_HAS("avx512f") && HARDMINE_CPU_HAS("avx512bw"); }
#endif

}  // namespace

#ifdef HARDMINE_X86
RowFacts (*const quantise)(const float*, int64_t, int64_t, int8_t*) = has_avx512() ? quantise_avx512 : quantise_portable;
void (*const products)(const int8_t*, int64_t, const uint8_t*, int32_t*) =
    has_vnni() ? int8_products_vnni : int8_products_portable;
void (*const screen)(const int32_t*, const ScreenRows&, const float*, const float*, const float*, int, uint32_t*,
                     float*, float*) = has_avx512() ? screen_avx512<int32_t> : screen_portable<int32_t>;
void (*const screen_sums)(const float*, const ScreenRows&, const float*, const float*, const float*, int, uint32_t*,
                          float*, float*) = has_avx512() ? screen_avx512<float> : screen_portable<float>;
double (*const exact_dot)(const float*, const float*, int64_t) =
    has_avx512()                                                                                ? exact_dot_avx512
    : !portable_forced() && HARDMINE_CPU_HAS("avx2") && HARDMINE_CPU_HAS("fma") ? exact_dot_avx2
                                                                                              : exact_dot_portable;
void (*const classify)(const float*, const float*, int, bool, float, float, uint32_t*, uint32_t*) =
    has_avx512() ? classify_avx512 : classify_portable;
#else
RowFacts (*const quantise)(const float*, int64_t, int64_t, int8_t*) = quantise_portable;
void (*const products)(const int8_t*, int64_t, const uint8_t*, int32_t*) = int8_products_portable;
void (*const screen)(const int32_t*, const ScreenRows&, const float*, const float*, const float*, int, uint32_t*,
                     float*, float*) = screen_portable<int32_t>;
void (*const screen_sums)(const float*, const ScreenRows&, const float*, const float*, const float*, int, uint32_t*,
                          float*, float*) = screen_portable<float>;
double (*const exact_dot)(const float*, const float*, int64_t) = exact_dot_portable;
void (*const classify)(const float*, const float*, int, bool, float, float, uint32_t*, uint32_t*) = classify_portable;
#endif

bool native() { return has_vnni(); }

}  // namespace hardmine::int8
