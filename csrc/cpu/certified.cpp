// Certified int8 top-k (precision="int8"). Each side is quantised once per call to int8 with
// a per-row scale A (x ~ A * code). The int8 dot products are exact int32 sums (AVX-512 VNNI
// where the CPU has it), so the only error of the approximate score A_q A_c (code_q . code_c)
// is the quantisation's, bounded per pair by Cauchy-Schwarz:
//     |q.c - q^.c^| = |q.(c - c^) + (q - q^).c^| <= ||q|| ||c - c^|| + ||q - q^|| ||c^||.
// A candidate whose upper bound reaches the query's running k-th best lower bound joins the
// query's shortlist; at the end the shortlist is re-scored exactly (float64 sums of the float32
// products) and the k best are selected, ties by the smaller index. Every member of the exact
// top-k has score >= the k-th best score >= the k-th best lower bound, so it is never dropped:
// the answer is the exact engine's on every input. docs/precision.md derives the float32 slack.
#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "hardmine/certified.hpp"
#include "hardmine/tiling.hpp"
#include "int8_kernels.hpp"

namespace hardmine {
namespace {

using int8::float_up;
using int8::kInf;
using int8::kLanes;
using int8::kRows;
using int8::RowFacts;
using int8::ScreenRows;

constexpr int64_t kQueryBlock = 240;  // queries per worker block: 20 micro-kernel blocks

// Rows whose norm is finite and at most 2^60 (so that float64 exact scores cannot overflow):
// the certified bound holds for them. Others reach the int8 path only with check_finite=False.
bool quantisable(const RowFacts& facts) { return facts.norm <= 0x1p60; }

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
  std::vector<int64_t> ids;
  std::vector<float> upper;
  float threshold = -kInf;   // the k-th best lower bound, -inf until k are seen
  size_t next_compaction = 0;
  bool fell_back = false;
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
};

// t (a float32 score bound) in the frame, rounded up / down with a margin far above the
// float64 rounding of the product; infinities stay.
float frame_up(float t, double to_frame) {
  if (std::isinf(t)) return t;
  const double v = t * to_frame;
  return int8::float_up(v + std::fabs(v) * 0x1p-40 + 0x1p-1000);
}

float frame_down(float t, double to_frame) {
  if (std::isinf(t)) return t;
  const double v = t * to_frame;
  return int8::float_down(v - std::fabs(v) * 0x1p-40 - 0x1p-1000);
}

float next_up(float t) { return std::nextafter(t, kInf); }
float next_down(float t) { return std::nextafter(t, -kInf); }

struct Frame {  // per-candidate float32 factors, in the call's frame (docs/precision.md)
  std::vector<float> scale, residual, coded;
};

class Certified {
 public:
  Certified(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
            const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
            int64_t* out_indices, float* out_scores, int64_t* out_shortlist)
      : queries_(queries), candidates_(candidates), k_(k), scales_(scales), exclusion_(exclusion),
        bounds_(bounds), tallies_(tallies), out_indices_(out_indices), out_scores_(out_scores), out_shortlist_(out_shortlist),
        dim_(queries.cols), padded_((queries.cols + 3) / 4 * 4),
        panels_((candidates.rows + kLanes - 1) / kLanes),
        cap_(static_cast<size_t>(std::max<int64_t>(16 * k + 256, candidates.rows / 32))) {}

  void run(const RunOptions& options);
  void bounds(double* lower, double* upper);

 private:
  void pack_candidates(int threads);
  void quantise_queries(int threads);
  void block(int64_t q0, int64_t nq, std::vector<Shortlist>& lists, BlockLoop& loop);
  void admit(Shortlist& list, int64_t id, float upper, float lower, bool certain) const;
  bool limits(int64_t query, Limits& out) const;
  void tally(Shortlist& list, const Limits& limits, const float* uppers, const float* lowers, int valid,
             int64_t c0) const;
  double to_frame(int64_t query) const;
  void fall_back(Shortlist& list) const;
  void compact(Shortlist& list) const;
  void finish(int64_t query, Shortlist& list, std::vector<float>& row_buffer) const;

  const MatrixView& queries_;
  const MatrixView& candidates_;
  int64_t k_;
  RowScales scales_;
  Exclusion exclusion_;
  ScoreBounds bounds_;
  FilterCounts tallies_;
  int64_t* out_indices_;
  float* out_scores_;
  int64_t* out_shortlist_;
  int64_t dim_, padded_, panels_;
  size_t cap_;
  std::vector<uint8_t> panel_codes_;  // panels of [padded/4][32 lanes][4] bytes, code + 128
  std::vector<int8_t> query_codes_;   // (Q + kRows) x padded
  std::vector<RowFacts> query_facts_;
  Frame frame_;
  int frame_exponent_ = 0;  // the frame's 2^E on the candidate side
  bool untrusted_ = false;  // some candidate row is not quantisable
};

void Certified::pack_candidates(int threads) {
  const int64_t num = candidates_.rows;
  panel_codes_.assign(static_cast<size_t>(panels_ * kLanes * padded_), uint8_t{128});
  std::vector<RowFacts> facts(static_cast<size_t>(num));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> buffer(static_cast<size_t>(dim_));
    std::vector<int8_t> codes(static_cast<size_t>(padded_));
#pragma omp for schedule(static)
    for (int64_t c = 0; c < num; ++c) {
      int64_t leading = 0;
      const float* row = rows_as_f32(candidates_, c, 1, buffer.data(), &leading);
      facts[c] = int8::quantise(row, dim_, padded_, codes.data());
      uint8_t* panel = panel_codes_.data() + (c / kLanes) * kLanes * padded_;
      const int64_t lane = c % kLanes;
      for (int64_t i = 0; i < padded_; ++i) {
        panel[(i / 4) * kLanes * 4 + lane * 4 + i % 4] = static_cast<uint8_t>(codes[i] + 128);
      }
    }
  }
  for (int64_t c = 0; c < num; ++c) {
    if (!quantisable(facts[c])) untrusted_ = true;  // NaN, inf or near-overflow rows (check_finite=False)
  }
  // One power of two 2^E brings the largest candidate factor near 1, so that neither side
  // of the frame overflows or underflows float32 (docs/precision.md).
  double largest = 0;
  for (int64_t c = 0; c < num; ++c) {
    const double cosine = scales_.candidates ? scales_.candidates[c] : 1.0;
    largest = std::max({largest, facts[c].scale * cosine, facts[c].norm * cosine});
  }
  int exponent = 0;
  if (largest > 0) std::frexp(largest, &exponent);
  frame_exponent_ = exponent;
  frame_.scale.assign(static_cast<size_t>(panels_ * kLanes), 0.0f);
  frame_.residual.assign(frame_.scale.size(), 0.0f);
  frame_.coded.assign(frame_.scale.size(), 0.0f);
  for (int64_t c = 0; c < num; ++c) {
    const double factor = std::ldexp(scales_.candidates ? scales_.candidates[c] : 1.0, -exponent);
    frame_.scale[c] = static_cast<float>(facts[c].scale * factor);
    frame_.residual[c] = float_up(facts[c].residual * factor);
    frame_.coded[c] = float_up(facts[c].coded * factor);
  }
}

void Certified::quantise_queries(int threads) {
  const int64_t num = queries_.rows;
  query_codes_.assign(static_cast<size_t>((num + kRows) * padded_), int8_t{0});
  query_facts_.resize(static_cast<size_t>(num));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> buffer(static_cast<size_t>(dim_));
#pragma omp for schedule(static)
    for (int64_t q = 0; q < num; ++q) {
      int64_t leading = 0;
      const float* row = rows_as_f32(queries_, q, 1, buffer.data(), &leading);
      query_facts_[q] = int8::quantise(row, dim_, padded_, query_codes_.data() + q * padded_);
    }
  }
}

void Certified::admit(Shortlist& list, int64_t id, float upper, float lower, bool certain) const {
  list.ids.push_back(id);
  list.upper.push_back(upper);
  if (certain) {  // only a certainly admissible candidate may raise the threshold
    keep_best(list.lower, k_, lower);
    if (static_cast<int64_t>(list.lower.size()) == k_) list.threshold = list.lower.front();
  }
  if (list.ids.size() >= list.next_compaction) compact(list);
}

double Certified::to_frame(int64_t query) const {
  const double cosine = scales_.queries != nullptr ? scales_.queries[query] : 1.0;
  return 1.0 / (std::ldexp(query_facts_[query].scale, frame_exponent_) * cosine);
}

bool Certified::limits(int64_t query, Limits& out) const {
  const double unit = to_frame(query);
  // s is returned as fl32(exact): fl32(x) <= u is certain when x <= u, impossible when x >= the
  // float after u; the strict (exclusive) and lower-side tests shift by one float likewise.
  if (bounds_.upper != nullptr) {
    const float u = bounds_.upper[query];
    if (std::isnan(u)) return false;
    out.in_upper = frame_down(bounds_.exclusive ? next_down(u) : u, unit);
    out.out_upper = frame_up(bounds_.exclusive ? u : next_up(u), unit);
  }
  if (bounds_.lower != nullptr) {
    const float l = bounds_.lower[query];
    if (std::isnan(l)) return false;
    out.in_lower = frame_up(bounds_.exclusive ? next_up(l) : l, unit);
    out.out_lower = frame_down(bounds_.exclusive ? l : next_down(l), unit);
  }
  for (int f = 0; f < tallies_.size; ++f) {
    const float b = tallies_.bound[f][query];
    if (std::isnan(b)) return false;
    if (tallies_.below[f]) {  // counts s < b
      out.yes[f] = frame_down(next_down(b), unit);
      out.no[f] = frame_up(b, unit);
    } else {  // counts s > b
      out.yes[f] = frame_up(next_up(b), unit);
      out.no[f] = frame_down(b, unit);
    }
  }
  return true;
}

void Certified::tally(Shortlist& list, const Limits& limits, const float* uppers, const float* lowers, int valid,
                      int64_t c0) const {
  uint32_t unsure_any = 0;
  uint8_t filters[kLanes];
  for (int f = 0; f < tallies_.size; ++f) {
    uint32_t yes = 0, unsure = 0;
    int8::classify(uppers, lowers, valid, !tallies_.below[f], limits.yes[f], limits.no[f], &yes, &unsure);
    list.tally[f] += __builtin_popcount(yes);
    if (unsure == 0) continue;
    if (unsure_any == 0) std::fill(filters, filters + kLanes, uint8_t{0});
    unsure_any |= unsure;
    for (uint32_t mask = unsure; mask != 0; mask &= mask - 1) filters[__builtin_ctz(mask)] |= uint8_t(1u << f);
  }
  for (uint32_t mask = unsure_any; mask != 0; mask &= mask - 1) {
    list.straddlers.push_back(c0 + __builtin_ctz(mask));
    list.straddled.push_back(filters[__builtin_ctz(mask)]);
  }
  if (list.straddlers.size() > cap_) fall_back(list);  // a bound in the thick of the scores
}

void Certified::fall_back(Shortlist& list) const {
  list.fell_back = true;
  list.threshold = kInf;
  std::vector<int64_t>().swap(list.ids);
  std::vector<float>().swap(list.upper);
  std::vector<int64_t>().swap(list.straddlers);
  std::vector<uint8_t>().swap(list.straddled);
}

void Certified::compact(Shortlist& list) const {
  size_t kept = 0;
  for (size_t i = 0; i < list.ids.size(); ++i) {
    if (list.upper[i] >= list.threshold) {
      list.ids[kept] = list.ids[i];
      list.upper[kept] = list.upper[i];
      ++kept;
    }
  }
  list.ids.resize(kept);
  list.upper.resize(kept);
  if (kept > cap_) {  // near-ties everywhere (e.g. many duplicates): the exact engine is cheaper
    fall_back(list);
    return;
  }
  list.next_compaction = std::max<size_t>(2 * kept, static_cast<size_t>(4 * k_ + 256));
}

void Certified::finish(int64_t query, Shortlist& list, std::vector<float>& row_buffer) const {
  int64_t* indices = out_indices_ + query * k_;
  float* scores = out_scores_ + query * k_;
  std::fill(indices, indices + k_, int64_t{-1});
  std::fill(scores, scores + k_, -kInf);
  if (!list.fell_back) compact(list);  // the survivors of the final threshold (or too many of them)
  if (list.fell_back) {
    out_shortlist_[query] = -1;
    return;
  }
  int64_t leading = 0;
  std::vector<float> query_row(static_cast<size_t>(dim_));
  const float* q = rows_as_f32(queries_, query, 1, row_buffer.data(), &leading);
  std::copy(q, q + dim_, query_row.begin());
  // Re-score by decreasing upper bound, keeping the k-th best exact score: once the next upper
  // bound is below it, no candidate left can enter (ties included: they would need upper >= it).
  std::vector<std::pair<float, int64_t>> order(list.ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = {list.upper[i], list.ids[i]};
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  // The frame's unit (A_q 2^E) turns an exact dot product into the bounds' units.
  const double to_frame = 1.0 / std::ldexp(query_facts_[query].scale, frame_exponent_);
  // Shortlisted rows are scattered over the candidate matrix: fetch a few rows ahead of the dot
  // products, so that their memory latency overlaps.
  const auto* base = static_cast<const char*>(candidates_.data);
  const int64_t item = candidates_.dtype == DType::F32 ? 4 : 2;
  const int64_t row_bytes = candidates_.col_stride == 1 ? candidates_.cols * item : 0;
  const auto prefetch = [&](size_t i) {
    if (i >= order.size()) return;
    const char* row = base + order[i].second * candidates_.row_stride * item;
    for (int64_t offset = 0; offset < row_bytes; offset += 64) __builtin_prefetch(row + offset);
  };
  constexpr size_t kAhead = 4;
  for (size_t i = 0; i < kAhead; ++i) prefetch(i);
  std::vector<std::pair<double, int64_t>> exact;  // ranked by the exact score (as the float64 reference), ties by index
  std::vector<double> best;  // min-heap of the k best exact scores, in the frame
  size_t rescored = 0;
  for (size_t i = 0; i < order.size(); ++i, ++rescored) {
    const float upper = order[i].first;
    if (static_cast<int64_t>(best.size()) == k_) {
      const double kth = best.front();
      // a margin far above the float64 rounding of the frame scores
      if (static_cast<double>(upper) < kth - std::fabs(kth) * 0x1p-40 - 0x1p-1000) break;
    }
    prefetch(i + kAhead);
    const int64_t id = order[i].second;
    const float* c = rows_as_f32(candidates_, id, 1, row_buffer.data(), &leading);
    const double dot = int8::exact_dot(query_row.data(), c, dim_);
    const double candidate_scale = scales_.candidates != nullptr ? scales_.candidates[id] : 1.0;
    const double query_scale = scales_.queries != nullptr ? scales_.queries[query] : 1.0;
    const double score = dot * query_scale * candidate_scale;
    // the mining window applies to the score returned, fl32(score), exactly as the fp32 engine's
    if (!bounds_.admits(query, static_cast<float>(score))) continue;
    keep_best(best, k_, dot * candidate_scale * to_frame);
    exact.emplace_back(score, id);
  }
  out_shortlist_[query] = static_cast<int64_t>(rescored);
  const auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  const size_t take = std::min(exact.size(), static_cast<size_t>(k_));
  std::partial_sort(exact.begin(), exact.begin() + take, exact.end(), better);
  for (size_t i = 0; i < take; ++i) {
    indices[i] = exact[i].second;
    scores[i] = static_cast<float>(exact[i].first);
  }
  // candidates that may lie either side of a filter bound: counted on their exact score
  for (size_t i = 0; i < list.straddlers.size(); ++i) {
    const int64_t id = list.straddlers[i];
    const float* c = rows_as_f32(candidates_, id, 1, row_buffer.data(), &leading);
    double score = int8::exact_dot(query_row.data(), c, dim_);
    if (scales_.queries != nullptr) score *= static_cast<double>(scales_.queries[query]) * scales_.candidates[id];
    const float value = static_cast<float>(score);
    for (int f = 0; f < tallies_.size; ++f) {
      if (!(list.straddled[i] >> f & 1)) continue;
      const float b = tallies_.bound[f][query];
      list.tally[f] += tallies_.below[f] ? (value < b && value > -kInf) : value > b;
    }
  }
  for (int f = 0; f < tallies_.size; ++f) tallies_.counts[query * tallies_.size + f] += list.tally[f];
}

void Certified::block(int64_t q0, int64_t nq, std::vector<Shortlist>& lists, BlockLoop& loop) {
  lists.assign(static_cast<size_t>(nq), Shortlist{});
  std::vector<float> query_norm(static_cast<size_t>(nq), 0.0f), query_residual(query_norm.size(), 0.0f);
  std::vector<Limits> row_limits(static_cast<size_t>(nq));
  for (int64_t r = 0; r < nq; ++r) {
    const RowFacts& facts = query_facts_[q0 + r];
    // a zero (or vanishing) row: every score is (nearly) 0; a NaN, inf or near-overflow row
    // (check_finite=False): the bound does not hold. The exact engine answers both.
    if (facts.scale == 0 || !quantisable(facts)) {
      lists[r].fell_back = true;
      lists[r].threshold = kInf;
      continue;
    }
    // the query's side of the bound, in units of its scale A_q (docs/precision.md)
    query_norm[r] = float_up(facts.norm / facts.scale);
    query_residual[r] = float_up(facts.residual / facts.scale);
    lists[r].next_compaction = static_cast<size_t>(4 * k_ + 256);
    if (!limits(q0 + r, row_limits[r])) fall_back(lists[r]);  // a NaN bound: the exact engine's rules decide
  }
  alignas(64) int32_t products[kRows * kLanes];
  float uppers[kRows * kLanes], lowers[kRows * kLanes];
  uint32_t masks[kRows];
  ScreenRows screened;
  screened.every_lane = tallies_.size > 0;
  for (int64_t panel = 0; panel < panels_; ++panel) {
    loop.poll();
    if (loop.stopped()) return;
    const uint8_t* codes = panel_codes_.data() + panel * kLanes * padded_;
    const int64_t c0 = panel * kLanes;
    const int valid = static_cast<int>(std::min<int64_t>(kLanes, candidates_.rows - c0));
    for (int64_t r0 = 0; r0 < nq; r0 += kRows) {
      int8::products(query_codes_.data() + (q0 + r0) * padded_, padded_, codes, products);
      screened.rows = static_cast<int>(std::min<int64_t>(kRows, nq - r0));
      for (int r = 0; r < screened.rows; ++r) {
        screened.offset[r] = 128 * query_facts_[q0 + r0 + r].code_sum;
        screened.norm[r] = query_norm[r0 + r];
        screened.residual[r] = query_residual[r0 + r];
        screened.threshold[r] = lists[r0 + r].threshold;  // +inf once a row fell back
      }
      int8::screen(products, screened, frame_.scale.data() + c0, frame_.residual.data() + c0, frame_.coded.data() + c0,
             valid, masks, uppers, lowers);
      for (int r = 0; r < screened.rows; ++r) {
        Shortlist& list = lists[r0 + r];
        if (list.fell_back) continue;
        const int64_t query = q0 + r0 + r;
        const Limits& limit = row_limits[r0 + r];
        for (uint32_t mask = masks[r]; mask != 0 && !list.fell_back; mask &= mask - 1) {
          const int l = __builtin_ctz(mask);
          const float upper = uppers[r * kLanes + l], lower = lowers[r * kLanes + l];
          if (lower >= limit.out_upper || upper <= limit.out_lower) continue;  // certainly outside the window
          if (exclusion_.excludes(query, c0 + l)) continue;
          admit(list, c0 + l, upper, lower, upper <= limit.in_upper && lower >= limit.in_lower);
        }
        if (tallies_.size > 0 && !list.fell_back) {
          tally(list, limit, uppers + r * kLanes, lowers + r * kLanes, valid, c0);
        }
      }
    }
  }
}

void Certified::run(const RunOptions& options) {
  const int64_t num_queries = queries_.rows;
  if (num_queries == 0) return;
  const int64_t num_blocks = (num_queries + kQueryBlock - 1) / kQueryBlock;
  const int threads = resolve_threads(options.num_threads, std::max(num_blocks, panels_));
  if (threads > 1) note_parallel_start();
  pack_candidates(threads);
  if (untrusted_) {  // a candidate row the bound cannot hold for: the exact engine answers every query
    for (int64_t q = 0; q < num_queries; ++q) {
      Shortlist list;
      list.fell_back = true;
      std::vector<float> unused;
      finish(q, list, unused);
    }
    return;
  }
  quantise_queries(threads);
  struct Worker {
    std::vector<Shortlist> lists;
    std::vector<float> row_buffer;
  };
  BlockLoop loop(options);
  loop.run(
      resolve_threads(options.num_threads, num_blocks), num_blocks,
      [&] { return Worker{{}, std::vector<float>(static_cast<size_t>(dim_))}; },
      [&](Worker& worker, int64_t b) {
        const int64_t q0 = b * kQueryBlock;
        const int64_t nq = std::min(kQueryBlock, num_queries - q0);
        block(q0, nq, worker.lists, loop);
        if (loop.stopped()) return;
        for (int64_t r = 0; r < nq; ++r) finish(q0 + r, worker.lists[r], worker.row_buffer);
        loop.poll();
      });
}

void Certified::bounds(double* lower, double* upper) {
  pack_candidates(1);
  quantise_queries(1);
  alignas(64) int32_t products[kRows * kLanes];
  float uppers[kRows * kLanes], lowers[kRows * kLanes];
  uint32_t masks[kRows];
  const int64_t num = candidates_.rows;
  for (int64_t q = 0; q < queries_.rows; ++q) {
    const RowFacts& facts = query_facts_[q];
    if (facts.scale == 0) continue;  // a zero row has no frame (topk_int8 leaves it to the exact engine)
    // back from the frame to score units: times A_q 2^E (and the query's cosine scale)
    const double unit = std::ldexp(facts.scale, frame_exponent_) * (scales_.queries ? scales_.queries[q] : 1.0);
    std::vector<int8_t> block(static_cast<size_t>(kRows * padded_), int8_t{0});
    std::copy(query_codes_.begin() + q * padded_, query_codes_.begin() + (q + 1) * padded_, block.begin());
    ScreenRows screened;
    screened.rows = 1;
    screened.offset[0] = 128 * facts.code_sum;
    screened.norm[0] = float_up(facts.norm / facts.scale);
    screened.residual[0] = float_up(facts.residual / facts.scale);
    screened.threshold[0] = -kInf;
    for (int64_t panel = 0; panel < panels_; ++panel) {
      const int64_t c0 = panel * kLanes;
      const int valid = static_cast<int>(std::min<int64_t>(kLanes, num - c0));
      int8::products(block.data(), padded_, panel_codes_.data() + panel * kLanes * padded_, products);
      int8::screen(products, screened, frame_.scale.data() + c0, frame_.residual.data() + c0, frame_.coded.data() + c0,
             valid, masks, uppers, lowers);
      for (int l = 0; l < valid; ++l) {
        lower[q * num + c0 + l] = lowers[l] * unit;
        upper[q * num + c0 + l] = uppers[l] * unit;
      }
    }
  }
}

}  // namespace

bool certified_int8_native() { return int8::native(); }

void int8_bounds(const MatrixView& queries, const MatrixView& candidates, const RowScales& scales, double* lower,
                 double* upper) {
  Certified(queries, candidates, 1, scales, Exclusion{}, ScoreBounds{}, FilterCounts{}, nullptr, nullptr, nullptr)
      .bounds(lower, upper);
}

void topk_int8(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
               const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
               const RunOptions& options, int64_t* out_indices, float* out_scores, int64_t* out_shortlist) {
  if (k < 1) throw std::invalid_argument("k must be >= 1; got " + std::to_string(k));
  if (queries.cols != candidates.cols) {
    throw std::invalid_argument("queries and candidates must have the same number of columns");
  }
  if (queries.cols > kMaxInt8Dim) {
    throw std::invalid_argument("int8 scoring takes d <= " + std::to_string(kMaxInt8Dim) + " (int32 sums); got " +
                                std::to_string(queries.cols));
  }
  if (exclusion.candidate_keys != nullptr || exclusion.key_indptr != nullptr) {
    throw std::invalid_argument("int8 scoring does not take candidate keys");
  }
  Certified(queries, candidates, k, scales, exclusion, bounds, tallies, out_indices, out_scores, out_shortlist)
      .run(options);
}

}  // namespace hardmine
