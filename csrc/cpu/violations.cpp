// Margin-violation statistics in one blocked pass (triplet hinge count and sum,
// VSE++ hardest negative).
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

#include "hardmine/tiling.hpp"

namespace hardmine {
namespace {

class ViolationsHandler {
 public:
  ViolationsHandler(const float* positive_scores, float margin, const Exclusion& exclusion,
                    int64_t* count, double* hinge_sum, float* max_hinge, int64_t* argmax,
                    float* best_scores)
      : positive_scores_(positive_scores),
        margin_(margin),
        exclusion_(exclusion),
        count_(count),
        hinge_sum_(hinge_sum),
        max_hinge_(max_hinge),
        argmax_(argmax),
        best_scores_(best_scores) {}

  struct State {
    std::vector<int64_t> count;
    std::vector<double> hinge_sum;
    std::vector<float> best_score;
    std::vector<int64_t> best_index;
  };

  State begin(int64_t, int64_t nq) const {
    State state;
    state.count.assign(static_cast<size_t>(nq), 0);
    state.hinge_sum.assign(static_cast<size_t>(nq), 0.0);
    state.best_score.assign(static_cast<size_t>(nq), -std::numeric_limits<float>::infinity());
    state.best_index.assign(static_cast<size_t>(nq), -1);
    return state;
  }

  void consume(State& state, int64_t q0, int64_t nq, int64_t c0, int64_t nc, const float* scores,
               int64_t ld) const {
    for (int64_t i = 0; i < nq; ++i) {
      const float* row = scores + i * ld;
      const int64_t query = q0 + i;
      const float positive = positive_scores_[query];
      const float threshold = positive - margin_;
      float best = state.best_score[i];
      int64_t best_index = state.best_index[i];
      int64_t count = 0;
      double hinge = 0.0;
      auto visit = [&](int64_t j) {
        const float s = row[j];
        if (!(s > threshold) && !(s > best)) return;
        const int64_t candidate = c0 + j;
        if (exclusion_.excludes(query, candidate)) return;
        if (s > threshold) {
          ++count;
          hinge += static_cast<double>(margin_) + static_cast<double>(s) - static_cast<double>(positive);
        }
        if (s > best) {
          best = s;
          best_index = candidate;
        }
      };
      // A score matters only when it violates the margin or beats the best so far.
      int64_t j = 0;
      for (; j + 64 <= nc; j += 64) {
        // Written so that a NaN threshold falls back to the best score, as in visit().
        const float gate = threshold < best ? threshold : best;
        for (uint64_t mask = above_mask64(row + j, gate); mask != 0; mask &= mask - 1) {
          visit(j + __builtin_ctzll(mask));
        }
      }
      for (; j < nc; ++j) visit(j);
      state.count[i] += count;
      state.hinge_sum[i] += hinge;
      state.best_score[i] = best;
      state.best_index[i] = best_index;
    }
  }

  void finish(State& state, int64_t q0, int64_t nq) const {
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t query = q0 + i;
      count_[query] = state.count[i];
      hinge_sum_[query] = state.hinge_sum[i];
      argmax_[query] = state.best_index[i];
      const float hinge = margin_ + state.best_score[i] - positive_scores_[query];
      max_hinge_[query] = state.best_index[i] >= 0 ? std::max(0.0f, hinge) : 0.0f;
      if (best_scores_ != nullptr) best_scores_[query] = state.best_score[i];
    }
  }

 private:
  const float* positive_scores_;
  float margin_;
  Exclusion exclusion_;
  int64_t* count_;
  double* hinge_sum_;
  float* max_hinge_;
  int64_t* argmax_;
  float* best_scores_;
};

}  // namespace

void violations(const MatrixView& queries, const MatrixView& candidates, const float* positive_scores,
                float margin, const RowScales& scales, const Exclusion& exclusion,
                const RunOptions& options, int64_t* count, double* hinge_sum, float* max_hinge,
                int64_t* argmax, float* best_scores) {
  ViolationsHandler handler(positive_scores, margin, exclusion, count, hinge_sum, max_hinge, argmax,
                            best_scores);
  for_each_score_tile(queries, candidates, scales, options, handler);
}

}  // namespace hardmine
