// Exact top-k (the handler is in topk_handler.hpp) and the filter tallies both handlers add.
#include <stdexcept>
#include <string>

#include "hardmine/topk_handler.hpp"

namespace hardmine {

void add_tallies(const FilterCounts& tallies, const float* row, int64_t nc, int64_t query) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (int f = 0; f < tallies.size; ++f) {
    const float bound = tallies.bound[f][query];
    const bool below = tallies.below[f];
    // s < bound  <=>  -inf < s <= the float just under bound
    const float below_high = std::nextafter(bound, -kInf);
    int64_t total = 0;
    int64_t j = 0;
    for (; j + 64 <= nc; j += 64) {
      const uint64_t mask =
          below ? within_mask64(row + j, -kInf, below_high) : above_mask64(row + j, bound);
      total += __builtin_popcountll(mask);
    }
    for (; j < nc; ++j) total += below ? (row[j] < bound && row[j] > -kInf) : row[j] > bound;
    tallies.counts[query * tallies.size + f] += total;
  }
}

void topk(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
          const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
          const RunOptions& options, int64_t* out_indices, float* out_scores) {
  if (k < 1) throw std::invalid_argument("k must be >= 1; got " + std::to_string(k));
  detail::TopKHandler handler(k, candidates.rows, exclusion, bounds, tallies, out_indices, out_scores);
  for_each_score_tile(queries, candidates, scales, options, handler);
}

}  // namespace hardmine
