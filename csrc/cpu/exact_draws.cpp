// Uniform seeded draws over the admissible candidates, scored exactly (precision="int8", an
// open `random` window). A draw's priority, -u with u the seeded uniform of (seed, row, id),
// does not depend on the score, so per query the candidates are visited by decreasing
// priority and only those visited are scored (float64 sums rounded to float32, as the int8
// path returns scores) and tested against the window, until `count` are admissible: the
// sampler's draw (sample.cpp, temperature 0) without scoring every candidate. With candidate
// keys a key draws once (all its candidates share u) and is represented by its best admissible
// candidate: a run of equal u holds the whole key, scored and ordered, its first admissible taken.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "hardmine/certified.hpp"
#include "hardmine/draws.hpp"
#include "hardmine/tiling.hpp"
#include "int8_kernels.hpp"
#include "seeded_draws.hpp"

namespace hardmine {
namespace {

struct Drawn {
  double u;
  int64_t id;
  float score;   // fl32 of the exact score, as returned
  double exact;  // the exact score: the output's window order, as the float64 reference's
};

bool exact_order(const Drawn& a, const Drawn& b) { return a.exact > b.exact || (a.exact == b.exact && a.id < b.id); }

constexpr int64_t kQueriesPerBlock = 16;
constexpr int64_t kChunk = 256;

class ExactDraws {
 public:
  ExactDraws(const MatrixView& queries, const MatrixView& candidates, int64_t count, const RowScales& scales,
             const Exclusion& exclusion, const ScoreBounds& bounds, const SampleRule& rule)
      : queries_(queries), candidates_(candidates), count_(count), scales_(scales), exclusion_(exclusion),
        bounds_(bounds), rule_(rule), keys_(exclusion.candidate_keys) {}

  struct Worker {
    std::vector<Drawn> kept;
    std::vector<float> query, buffer;
    double query_norm2 = 0;
  };

  // The query's draws into out (count, window order); returns the candidates scored. A window
  // that admits few candidates widens the visited draws 8x at a time, up to every candidate.
  int64_t draw(int64_t query, Worker& worker, int64_t* indices, float* scores, double* priorities) const {
    std::fill(indices, indices + count_, int64_t{-1});
    std::fill(scores, scores + count_, -std::numeric_limits<float>::infinity());
    std::fill(priorities, priorities + count_, -std::numeric_limits<double>::infinity());
    int64_t leading = 0;
    const float* q = rows_as_f32(queries_, query, 1, worker.buffer.data(), &leading);
    std::copy(q, q + queries_.cols, worker.query.begin());
    if (scales_.queries != nullptr) worker.query_norm2 = int8::exact_dot(q, q, queries_.cols);
    for (int64_t width = 4 * count_ + 64;; width *= 8) {
      double edge = 0;
      const bool all = smallest(query, std::min(width, candidates_.rows), worker.kept, edge);
      std::vector<Drawn> taken;
      std::vector<int64_t> taken_keys;
      int64_t scored = 0;
      for (size_t i = 0; i < worker.kept.size() && static_cast<int64_t>(taken.size()) < count_;) {
        // a run of equal draws is kept in window order: score them all first
        size_t j = i;
        while (j < worker.kept.size() && worker.kept[j].u == worker.kept[i].u) score(worker, worker.kept[j++]);
        scored += static_cast<int64_t>(j - i);
        std::sort(worker.kept.begin() + i, worker.kept.begin() + j,
                  [](const Drawn& a, const Drawn& b) { return ranks_before(a.score, a.id, b.score, b.id); });
        for (; i < j && static_cast<int64_t>(taken.size()) < count_; ++i) {
          const float s = worker.kept[i].score;
          if (!(s > -std::numeric_limits<float>::infinity()) || !bounds_.admits(query, s)) continue;
          if (keys_ != nullptr) {  // one per key: its best admissible candidate, first in the run
            const int64_t key = keys_[worker.kept[i].id];
            if (std::find(taken_keys.begin(), taken_keys.end(), key) != taken_keys.end()) continue;
            taken_keys.push_back(key);
          }
          taken.push_back(worker.kept[i]);
        }
        i = j;
      }
      // complete when every candidate was seen, or the draws stopped short of the unseen ones
      const bool complete = all || (static_cast<int64_t>(taken.size()) == count_ && taken.back().u < edge);
      if (!complete) continue;
      std::sort(taken.begin(), taken.end(), exact_order);
      for (size_t r = 0; r < taken.size(); ++r) {
        indices[r] = taken[r].id;
        scores[r] = taken[r].score;
        priorities[r] = -taken[r].u;
      }
      return scored;
    }
  }

 private:
  // The `width` smallest draws of the query's non-excluded candidates, by u ascending; `edge` is
  // the smallest u left out (+inf when none was). Returns whether none was left out.
  bool smallest(int64_t query, int64_t width, std::vector<Drawn>& kept, double& edge) const {
    kept.clear();
    const auto larger_u = [](const Drawn& a, const Drawn& b) { return a.u < b.u; };  // max-heap on u
    double u[kChunk];
    bool dropped = false;
    edge = std::numeric_limits<double>::infinity();
    for (int64_t c0 = 0; c0 < candidates_.rows; c0 += kChunk) {
      const int64_t n = std::min(kChunk, candidates_.rows - c0);
      detail::seeded_draws(rule_.seed, rule_.first_row + query, keys_ != nullptr ? keys_ + c0 : nullptr,
                           rule_.first_id + c0, n, u);
      for (int64_t t = 0; t < n; ++t) {
        const bool full = static_cast<int64_t>(kept.size()) == width;
        if (full && !(u[t] < kept.front().u)) {
          if (u[t] < edge && !exclusion_.excludes(query, c0 + t)) edge = u[t], dropped = true;
          continue;
        }
        if (exclusion_.excludes(query, c0 + t)) continue;
        if (full) {
          std::pop_heap(kept.begin(), kept.end(), larger_u);
          edge = std::min(edge, kept.back().u);
          dropped = true;
          kept.back() = Drawn{u[t], c0 + t, 0.0f, 0.0};
        } else {
          kept.push_back(Drawn{u[t], c0 + t, 0.0f, 0.0});
        }
        std::push_heap(kept.begin(), kept.end(), larger_u);
      }
    }
    std::sort_heap(kept.begin(), kept.end(), larger_u);
    return !dropped;
  }

  void score(Worker& worker, Drawn& drawn) const {
    int64_t leading = 0;
    const float* c = rows_as_f32(candidates_, drawn.id, 1, worker.buffer.data(), &leading);
    double value = int8::exact_dot(worker.query.data(), c, queries_.cols);
    if (scales_.queries != nullptr) {
      value = int8::exact_score(value, worker.query_norm2, int8::exact_dot(c, c, queries_.cols), true);
    }
    drawn.exact = value;
    drawn.score = static_cast<float>(value);
  }

  const MatrixView& queries_;
  const MatrixView& candidates_;
  int64_t count_;
  RowScales scales_;
  Exclusion exclusion_;
  ScoreBounds bounds_;
  SampleRule rule_;
  const int64_t* keys_;
};

}  // namespace

void draw_uniform_exact(const MatrixView& queries, const MatrixView& candidates, int64_t count,
                        const RowScales& scales, const Exclusion& exclusion, const ScoreBounds& bounds,
                        const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
                        double* out_priorities, int64_t* out_scored) {
  if (count < 1) throw std::invalid_argument("count must be >= 1; got " + std::to_string(count));
  if (queries.cols != candidates.cols) {
    throw std::invalid_argument("queries and candidates must have the same number of columns");
  }
  const int64_t num_blocks = (queries.rows + kQueriesPerBlock - 1) / kQueriesPerBlock;
  const ExactDraws draws(queries, candidates, count, scales, exclusion, bounds, rule);
  BlockLoop loop(options);
  loop.run(
      resolve_threads(options.num_threads, num_blocks), num_blocks,
      [&] {
        return ExactDraws::Worker{{}, std::vector<float>(static_cast<size_t>(queries.cols)),
                                  std::vector<float>(static_cast<size_t>(queries.cols))};
      },
      [&](ExactDraws::Worker& worker, int64_t block) {
        const int64_t q1 = std::min(queries.rows, (block + 1) * kQueriesPerBlock);
        for (int64_t q = block * kQueriesPerBlock; q < q1; ++q) {
          out_scored[q] = draws.draw(q, worker, out_indices + q * count, out_scores + q * count,
                                     out_priorities + q * count);
        }
        loop.poll();
      });
}

}  // namespace hardmine
