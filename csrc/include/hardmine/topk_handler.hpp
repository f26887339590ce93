// The exact top-k result handler, shared by topk() and the sampler (which needs the top ranks
// of the same tiles to skip them): a per-row reservoir of up to `capacity` candidates that beat the
// running threshold; when it fills, nth_element keeps the best k and raises the
// threshold to the k-th score, so most scores are rejected by one comparison.
// With candidate keys the reservoir is first reduced to the best candidate per
// key: a candidate below the k-th best distinct key can never be returned, so
// the threshold stays exact.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "hardmine/draws.hpp"
#include "hardmine/tiling.hpp"

namespace hardmine {
namespace detail {

struct Scored {
  float score;
  int64_t index;
};

// The window order of draws.hpp: higher score first, equal scores by the smaller candidate index.
inline bool better(const Scored& a, const Scored& b) { return ranks_before(a.score, a.index, b.score, b.index); }

class TopKHandler {
 public:
  TopKHandler(int64_t k, int64_t num_candidates, const Exclusion& exclusion, const ScoreBounds& bounds,
              const FilterCounts& tallies, int64_t* out_indices, float* out_scores)
      : k_(k),
        kept_(std::min(k, num_candidates)),
        exclusion_(exclusion),
        bounds_(bounds),
        tallies_(tallies),
        out_indices_(out_indices),
        out_scores_(out_scores) {
    // Candidates arrive in increasing index order, so a score equal to the
    // threshold always loses the tie: the strict comparison below is exact.
    capacity_ = std::min(num_candidates, std::max(2 * kept_, kept_ + 16));
  }

  struct State {
    std::vector<Scored> buffer;
    std::vector<int64_t> count;
    std::vector<float> threshold;
  };

  State begin(int64_t, int64_t nq) const {
    State state;
    state.buffer.resize(static_cast<size_t>(nq * capacity_));
    state.count.assign(static_cast<size_t>(nq), 0);
    state.threshold.assign(static_cast<size_t>(nq), -std::numeric_limits<float>::infinity());
    return state;
  }

  void consume(State& state, int64_t q0, int64_t nq, int64_t c0, int64_t nc, const float* scores,
               int64_t ld) const {
    for (int64_t i = 0; i < nq; ++i) {
      const float* row = scores + i * ld;
      const int64_t query = q0 + i;
      Scored* buffer = state.buffer.data() + i * capacity_;
      int64_t count = state.count[i];
      float threshold = state.threshold[i];
      auto offer = [&](int64_t j) {
        const float s = row[j];
        if (!(s > threshold) || !bounds_.admits(query, s)) return;
        const int64_t candidate = c0 + j;
        if (exclusion_.excludes(query, candidate)) return;
        buffer[count++] = Scored{s, candidate};
        if (count == capacity_ && capacity_ > kept_) {
          count = distinct(buffer, count);
          if (count >= kept_) {
            std::nth_element(buffer, buffer + kept_ - 1, buffer + count, better);
            threshold = buffer[kept_ - 1].score;
            count = kept_;
          }
        }
      };
      // Most 64-score segments hold nothing above the threshold and cost one
      // vector compare; only the set bits are looked at individually.
      int64_t j = 0;
      if (bounds_.upper == nullptr && bounds_.lower == nullptr) {
        for (; j + 64 <= nc; j += 64) {
          for (uint64_t mask = above_mask64(row + j, threshold); mask != 0; mask &= mask - 1) {
            offer(j + __builtin_ctzll(mask));
          }
        }
      } else {
        // The mining window prunes too: scores above the upper bound (often many,
        // e.g. under a margin filter) never reach offer().
        const float high = upper_gate(query);
        for (; j + 64 <= nc; j += 64) {
          const float low = std::max(threshold, lower_gate(query));
          for (uint64_t mask = within_mask64(row + j, low, high); mask != 0; mask &= mask - 1) {
            offer(j + __builtin_ctzll(mask));
          }
        }
      }
      for (; j < nc; ++j) offer(j);
      state.count[i] = count;
      state.threshold[i] = threshold;
      add_tallies(tallies_, row, nc, query);
    }
  }

  void finish(State& state, int64_t q0, int64_t nq) const {
    for (int64_t i = 0; i < nq; ++i) {
      Scored* buffer = state.buffer.data() + i * capacity_;
      const int64_t count = distinct(buffer, state.count[i]);
      const int64_t take = std::min(count, kept_);
      std::partial_sort(buffer, buffer + take, buffer + count, better);
      int64_t* indices = out_indices_ + (q0 + i) * k_;
      float* scores = out_scores_ + (q0 + i) * k_;
      for (int64_t r = 0; r < take; ++r) {
        indices[r] = buffer[r].index;
        scores[r] = buffer[r].score;
      }
      for (int64_t r = take; r < k_; ++r) {
        indices[r] = -1;
        scores[r] = -std::numeric_limits<float>::infinity();
      }
    }
  }

 private:
  // Gates for within_mask64 (low < s <= high) equivalent to the bounds' own test.
  float upper_gate(int64_t query) const {
    if (bounds_.upper == nullptr) return std::numeric_limits<float>::infinity();
    const float upper = bounds_.upper[query];
    return bounds_.exclusive ? std::nextafter(upper, -std::numeric_limits<float>::infinity()) : upper;
  }
  float lower_gate(int64_t query) const {
    if (bounds_.lower == nullptr) return -std::numeric_limits<float>::infinity();
    const float lower = bounds_.lower[query];
    return bounds_.exclusive ? lower : std::nextafter(lower, -std::numeric_limits<float>::infinity());
  }

  // Keeps the best candidate of each key (all of them without keys); returns the new count.
  int64_t distinct(Scored* buffer, int64_t count) const {
    const int64_t* keys = exclusion_.candidate_keys;
    if (keys == nullptr || count < 2) return count;
    std::sort(buffer, buffer + count, [keys](const Scored& a, const Scored& b) {
      const int64_t ka = keys[a.index], kb = keys[b.index];
      return ka < kb || (ka == kb && better(a, b));
    });
    int64_t out = 1;
    for (int64_t r = 1; r < count; ++r) {
      if (keys[buffer[r].index] != keys[buffer[out - 1].index]) buffer[out++] = buffer[r];
    }
    return out;
  }

  int64_t k_;
  int64_t kept_;
  int64_t capacity_;
  Exclusion exclusion_;
  ScoreBounds bounds_;
  FilterCounts tallies_;
  int64_t* out_indices_;
  float* out_scores_;
};

}  // namespace detail
}  // namespace hardmine
