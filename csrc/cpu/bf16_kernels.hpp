// The bf16 path's kernels (bf16_kernels.cpp): quantisation to bf16 codes under a power-of-two
// row scale and the float32 products of 12 queries x 32 candidates (AVX512_BF16 vdpbf16ps, or
// portable); the screen and the rest are the int8 path's (int8_kernels.hpp).
#pragma once

#include <cstdint>

#include "int8_kernels.hpp"

namespace hardmine::bf16 {

/// Quantises x[0, d) into bf16 codes[0, padded) (zeros past d): x ~ A * code with A = 2^e so
/// that the codes lie in [-1, 1] and the largest is >= 1/2; a code below 2^-126 (which the
/// kernel would flush) is 0. RowFacts as the int8 quantiser's (code_sum 0).
int8::RowFacts quantise(const float* x, int64_t d, int64_t padded, uint16_t* codes);

/// out[r * 32 + l] ~ sum_i query_codes[r * padded + i] * panel code (lane l, i) in float32, the
/// panel stored as [padded / 2][32 lanes][2] codes. Within gamma(padded) sum |products| plus
/// 2 padded 2^-126 of the exact sum (docs/precision.md, "bf16").
extern void (*const products)(const uint16_t* query_codes, int64_t padded, const uint16_t* panel, float* out);

/// gamma(n) of the products' bound: n float32 roundings, with room for 1 / (1 - n u).
inline double accumulation_error(int64_t n) { return static_cast<double>(n) * 0x1.02p-24; }

/// True when the products kernel is the AVX512_BF16 one.
bool native();

}  // namespace hardmine::bf16
