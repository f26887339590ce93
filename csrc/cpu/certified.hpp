// The certified int8 top-k's driver (precision="int8"), shared by certified.cpp (quantisation,
// the screened scan, the entry points) and certified_select.cpp (shortlists, the mining window
// and its counts, exact re-scoring). Private to the core; docs/precision.md explains the method.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "hardmine/certified.hpp"
#include "hardmine/tiling.hpp"
#include "bf16_kernels.hpp"
#include "int8_kernels.hpp"

namespace hardmine::certified {

using int8::float_up;
using int8::kInf;
using int8::kLanes;
using int8::kRows;
using int8::RowFacts;
using int8::ScreenRows;

constexpr int64_t kQueryBlock = 240;  // queries per worker block: 20 micro-kernel blocks

// Rows whose norm is finite: the certified bound holds for them, at any magnitude (the frame's
// powers of two keep float32 in range; a float64 sum of products of float32 values cannot
// overflow). NaN and inf rows reach the certified paths only with check_finite=False.
inline bool quantisable(const RowFacts& facts) { return std::isfinite(facts.norm); }

// heap: a min-heap of the (at most k) largest values offered so far.
template <class T>
void keep_best(std::vector<T>& heap, int64_t k, T value) {
  if (static_cast<int64_t>(heap.size()) < k) {
    heap.push_back(value);
    std::push_heap(heap.begin(), heap.end(), std::greater<T>());
  } else if (value > heap.front()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<T>());
    heap.back() = value;
    std::push_heap(heap.begin(), heap.end(), std::greater<T>());
  }
}

struct Shortlist {
  std::vector<float> lower;  // min-heap of the best k lower bounds of certainly admissible candidates
  std::vector<int64_t> lower_keys;  // with candidate keys: the key of each heap entry (one entry per key)
  std::vector<int64_t> ids;
  std::vector<float> upper;
  float threshold = -kInf;   // the k-th best lower bound, -inf until k are seen
  size_t next_compaction = 0;
  // the screen cannot decide this query (a zero, NaN or inf row, a NaN bound, a shortlist past
  // its cap): every candidate is scored exactly at the end (docs/precision.md, "Exhaustive rows")
  bool exhaustive = false;
  // filter tallies: the certain counts, and the candidates that may fall either side of a
  // bound (with the filters concerned, one bit each), re-scored at the end
  int64_t tally[FilterCounts::kMaxFilters] = {};
  std::vector<int64_t> straddlers;
  std::vector<uint8_t> straddled;
};

// A query's score limits in the frame, each rounded so that a test on the float32 bounds is
// certain (docs/precision.md, "Mining filters").
struct Limits {
  float in_upper = kInf, out_upper = kInf;    // upper <= in_upper: under the upper bound; lower >= out_upper: over it
  float in_lower = -kInf, out_lower = -kInf;  // lower >= in_lower: over the lower bound; upper <= out_lower: under it
  float yes[FilterCounts::kMaxFilters] = {}, no[FilterCounts::kMaxFilters] = {};
  double priority_unit = 0;  // softmax draws: a frame value times this is in units of s / T
};

// violations (precision="int8"): tally 0 counts s > positive - margin over non-excluded
// candidates; every candidate it may count is re-scored, for the exact hinge sum
struct Hinges {
  const float* positive = nullptr;  // (Q,) s_p; null: not a violations call
  float margin = 0;
  double* out_sums = nullptr;       // (Q,) sum of margin + s - s_p over the violators
};

// softmax draws (an open softmax window): the call keeps the `k` highest priorities
// p = fl32(s) / T - log(-log u(seed, first_row + query, first_id + id)), the sampler's rule;
// shortlists, thresholds and bounds are then in priority units
struct Softmax {
  double temperature = 0;  // > 0: a softmax draw
  uint64_t seed = 0;
  int64_t first_row = 0, first_id = 0;
  double* out_priorities = nullptr;  // (Q, k)
};

struct Frame {  // per-candidate float32 factors, in the call's frame (docs/precision.md)
  std::vector<float> scale, residual, coded;
};

class Certified {
 public:
  Certified(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
            const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
            int64_t* out_indices, float* out_scores, int64_t* out_shortlist, Codes codes,
            const Hinges& hinges = {}, const Softmax& softmax = {})
      : bf16_(codes == Codes::Bf16), queries_(queries), candidates_(candidates), k_(k), scales_(scales),
        exclusion_(exclusion),
        bounds_(bounds), tallies_(tallies), hinges_(hinges), softmax_(softmax), out_indices_(out_indices),
        out_scores_(out_scores),
        out_shortlist_(out_shortlist),
        dim_(queries.cols), padded_((queries.cols + 3) / 4 * 4),
        panels_((candidates.rows + kLanes - 1) / kLanes),
        cap_(static_cast<size_t>(std::max<int64_t>(16 * k + 256, candidates.rows / 32))),
        cosine_(scales.queries != nullptr) {}

  void run(const RunOptions& options);
  void bounds(double* lower, double* upper);

 private:
  void pack_candidates(int threads);
  void clear_codes(int64_t candidate);
  void quantise_queries(int threads);
  void screen_rows(int64_t first, int count, ScreenRows& out) const;
  // the bounds of queries [first, first + 12) against one panel (rows.rows of them used)
  void screen_panel(int64_t first, const ScreenRows& rows, int64_t panel, int valid, uint32_t* masks,
                    float* uppers, float* lowers) const;
  void block(int64_t q0, int64_t nq, std::vector<Shortlist>& lists, BlockLoop& loop);
  void admit(Shortlist& list, int64_t id, float upper, float lower, bool certain) const;
  void raise_threshold(Shortlist& list, int64_t id, float lower) const;
  bool limits(int64_t query, Limits& out) const;
  void tally(Shortlist& list, const Limits& limits, const float* uppers, const float* lowers, int valid,
             int64_t c0) const;
  double to_frame(int64_t query) const;
  double exact(int64_t query, const float* query_row, int64_t id, std::vector<float>& row_buffer) const;
  void go_exhaustive(Shortlist& list) const;
  void list_every_candidate(int64_t query, Shortlist& list) const;
  void compact(Shortlist& list) const;
  void finish(int64_t query, Shortlist& list, std::vector<float>& row_buffer) const;
  void select(int64_t query, Shortlist& list, const float* query_row, std::vector<float>& row_buffer) const;
  void draw_lanes(Shortlist& list, int64_t query, const Limits& limits, const float* uppers, const float* lowers,
                  int valid, int64_t c0) const;
  void finish_draws(int64_t query, Shortlist& list, const float* query_row, std::vector<float>& row_buffer) const;
  void count_straddlers(int64_t query, Shortlist& list, const float* query_row, std::vector<float>& row_buffer) const;

  bool bf16_;  // bf16 codes and float32 sums, else int8 codes and int32 sums
  const MatrixView& queries_;
  const MatrixView& candidates_;
  int64_t k_;
  RowScales scales_;
  Exclusion exclusion_;
  ScoreBounds bounds_;
  FilterCounts tallies_;
  Hinges hinges_;
  Softmax softmax_;
  int64_t* out_indices_;
  float* out_scores_;
  int64_t* out_shortlist_;
  int64_t dim_, padded_, panels_;
  size_t cap_;
  std::vector<uint8_t> panel_codes_;  // panels of [padded/4][32 lanes][4] bytes, code + 128
  std::vector<int8_t> query_codes_;   // (Q + kRows) x padded
  std::vector<uint16_t> panel_bf16_;  // bf16: panels of [padded/2][32 lanes][2] codes
  std::vector<uint16_t> query_bf16_;  // bf16: (Q + kRows) x padded
  std::vector<RowFacts> query_facts_;
  bool cosine_;  // the exact score is the cosine (exact_score): the rows' squared norms below
  std::vector<double> query_norm2_, candidate_norm2_;
  Frame frame_;
  int frame_exponent_ = 0;  // the frame's 2^E on the candidate side
};

}  // namespace hardmine::certified
