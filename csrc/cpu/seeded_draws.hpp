// The sampler's vectorised seeded draws (sample.cpp), shared with exact_draws.cpp.
#pragma once

#include <cstdint>

namespace hardmine::detail {

/// out[t] = draw_of(seed, row, ids[t]) for t in [0, n), or of first_id + t without ids (keys
/// draw once per key).
void seeded_draws(uint64_t seed, int64_t row, const int64_t* ids, int64_t first_id, int64_t n, double* out);

}  // namespace hardmine::detail
