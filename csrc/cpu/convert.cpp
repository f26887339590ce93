// Row conversion to fp32 and score scaling, with run-time CPU dispatch for the
// half-precision paths (the package is built for the baseline x86-64 ISA).
#include <cstring>
#include <string>

#include "hardmine/tiling.hpp"

#include "hardmine/cpu_features.hpp"

namespace hardmine {
namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal half: renormalise into a normal float
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

#ifdef HARDMINE_X86
__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const uint16_t* in, int64_t n,
                                                                 float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = half_to_float(in[i]);
}

bool cpu_has_f16c() {
  static const bool has = HARDMINE_CPU_HAS("f16c") && HARDMINE_CPU_HAS("avx");
  return has;
}
#endif

void halves_to_floats(const uint16_t* in, int64_t n, float* out) {
#ifdef HARDMINE_X86
  if (cpu_has_f16c()) {
    halves_to_floats_f16c(in, n, out);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(in[i]);
}

uint64_t above_mask64_portable(const float* x, float threshold) {
  uint64_t mask = 0;
  for (int t = 0; t < 64; ++t) mask |= static_cast<uint64_t>(x[t] > threshold) << t;
  return mask;
}

uint64_t within_mask64_portable(const float* x, float low, float high) {
  uint64_t mask = 0;
  for (int t = 0; t < 64; ++t) mask |= static_cast<uint64_t>(x[t] > low && x[t] <= high) << t;
  return mask;
}

#ifdef HARDMINE_X86
__attribute__((target("avx512f"))) uint64_t within_mask64_avx512(const float* x, float low, float high) {
  const __m512 lo = _mm512_set1_ps(low);
  const __m512 hi = _mm512_set1_ps(high);
  uint64_t mask = 0;
  for (int part = 0; part < 4; ++part) {
    const __m512 v = _mm512_loadu_ps(x + 16 * part);
    const uint64_t bits = _mm512_cmp_ps_mask(v, lo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, hi, _CMP_LE_OQ);
    mask |= bits << (16 * part);
  }
  return mask;
}

__attribute__((target("avx2"))) uint64_t within_mask64_avx2(const float* x, float low, float high) {
  const __m256 lo = _mm256_set1_ps(low);
  const __m256 hi = _mm256_set1_ps(high);
  uint64_t mask = 0;
  for (int part = 0; part < 8; ++part) {
    const __m256 v = _mm256_loadu_ps(x + 8 * part);
    const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(v, lo, _CMP_GT_OQ), _mm256_cmp_ps(v, hi, _CMP_LE_OQ));
    mask |= static_cast<uint64_t>(_mm256_movemask_ps(inside)) << (8 * part);
  }
  return mask;
}

__attribute__((target("avx512f"))) uint64_t above_mask64_avx512(const float* x, float threshold) {
  const __m512 t = _mm512_set1_ps(threshold);
  uint64_t mask = 0;
  for (int part = 0; part < 4; ++part) {
    const uint64_t bits = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + 16 * part), t, _CMP_GT_OQ);
    mask |= bits << (16 * part);
  }
  return mask;
}

__attribute__((target("avx2"))) uint64_t above_mask64_avx2(const float* x, float threshold) {
  const __m256 t = _mm256_set1_ps(threshold);
  uint64_t mask = 0;
  for (int part = 0; part < 8; ++part) {
    const __m256 above = _mm256_cmp_ps(_mm256_loadu_ps(x + 8 * part), t, _CMP_GT_OQ);
    mask |= static_cast<uint64_t>(_mm256_movemask_ps(above)) << (8 * part);
  }
  return mask;
}
#endif

std::vector<MaskKernels> available_mask_kernels() {
  std::vector<MaskKernels> out{{"portable", above_mask64_portable, within_mask64_portable}};
#ifdef HARDMINE_X86
  if (HARDMINE_CPU_HAS("avx2")) out.push_back({"avx2", above_mask64_avx2, within_mask64_avx2});
  if (HARDMINE_CPU_HAS("avx512f")) out.push_back({"avx512f", above_mask64_avx512, within_mask64_avx512});
#endif
  return out;
}

}  // namespace

std::vector<MaskKernels> mask_kernels() { return available_mask_kernels(); }

uint64_t (*const above_mask64)(const float*, float) = available_mask_kernels().back().above;
uint64_t (*const within_mask64)(const float*, float, float) = available_mask_kernels().back().within;

const float* rows_as_f32(const MatrixView& view, int64_t first, int64_t count, float* buffer,
                         int64_t* leading) {
  if (view.blas_ready() && view.row_stride < (int64_t{1} << 31)) {
    *leading = view.row_stride;
    return static_cast<const float*>(view.data) + first * view.row_stride;
  }
  const int64_t cols = view.cols;
  for (int64_t r = 0; r < count; ++r) {
    float* out = buffer + r * cols;
    const int64_t base = (first + r) * view.row_stride;
    switch (view.dtype) {
      case DType::F32: {
        const float* in = static_cast<const float*>(view.data) + base;
        for (int64_t c = 0; c < cols; ++c) out[c] = in[c * view.col_stride];
        break;
      }
      case DType::F16: {
        const uint16_t* in = static_cast<const uint16_t*>(view.data) + base;
        if (view.col_stride == 1) {
          halves_to_floats(in, cols, out);
        } else {
          for (int64_t c = 0; c < cols; ++c) out[c] = half_to_float(in[c * view.col_stride]);
        }
        break;
      }
      case DType::BF16: {
        const uint16_t* in = static_cast<const uint16_t*>(view.data) + base;
        for (int64_t c = 0; c < cols; ++c) out[c] = bf16_to_float(in[c * view.col_stride]);
        break;
      }
    }
  }
  *leading = cols;
  return buffer;
}

void apply_scales(float* scores, int64_t ld, int64_t rows, int64_t cols, const float* query_scales,
                  const float* candidate_scales) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = scores + i * ld;
    const float row_scale = query_scales ? query_scales[i] : 1.0f;
    if (candidate_scales) {
      for (int64_t j = 0; j < cols; ++j) row[j] *= row_scale * candidate_scales[j];
    } else {
      for (int64_t j = 0; j < cols; ++j) row[j] *= row_scale;
    }
  }
}

std::string simd_info() {
#ifdef HARDMINE_X86
  std::string out = "x86-64 baseline build; run-time:";
  if (HARDMINE_CPU_HAS("avx512f")) out += " avx512f";
  if (HARDMINE_CPU_HAS("avx2")) out += " avx2";
  if (HARDMINE_CPU_HAS("fma")) out += " fma";
  out += cpu_has_f16c() ? " f16c (used for fp16 rows)" : " (no f16c: scalar fp16 conversion)";
  out += HARDMINE_CPU_HAS("avx512f") ? "; score scan: avx512f"
         : HARDMINE_CPU_HAS("avx2") ? "; score scan: avx2" : "; score scan: portable";
  return out;
#else
  return "portable build (scalar conversions)";
#endif
}

}  // namespace hardmine
