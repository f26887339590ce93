// The seeded draw and the orders every engine keeps (CPU core and CUDA kernels alike): one
// definition, so that every backend picks the same negatives.
#pragma once

#include <cstdint>

#include "hardmine/views.hpp"

namespace hardmine {

/// Uniform (0, 1) per (seed, row, id): the splitmix64 finaliser, bit for bit the one
/// hardmine._draws.uniform computes.
HARDMINE_HOST_DEVICE inline double draw_of(uint64_t seed, int64_t row, int64_t id) {
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
  constexpr uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
  constexpr uint64_t kMix2 = 0x94D049BB133111EBULL;
  uint64_t state = seed * kGolden;
  state ^= static_cast<uint64_t>(row) * kMix1;
  state ^= static_cast<uint64_t>(id) * kMix2;
  state ^= state >> 30;
  state *= kMix1;
  state ^= state >> 27;
  state *= kMix2;
  state ^= state >> 31;
  return (static_cast<double>(state >> 11) + 0.5) / 9007199254740992.0;  // 2^53
}

/// Window order: higher score first, equal scores by the smaller index.
HARDMINE_HOST_DEVICE inline bool ranks_before(float score_a, int64_t index_a, float score_b, int64_t index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

/// Kept order of a selection by value (the score for top-k, the priority for draws): higher
/// value first, then the window order.
HARDMINE_HOST_DEVICE inline bool kept_before(double value_a, float score_a, int64_t index_a, double value_b,
                                             float score_b, int64_t index_b) {
  return value_a > value_b || (value_a == value_b && ranks_before(score_a, index_a, score_b, index_b));
}

}  // namespace hardmine
