// The certified int8 top-k's shortlists (certified.hpp): admission against the running k-th best
// lower bound, the mining window and filter counts decided from the bounds where they are certain,
// and the exact float64 re-scoring of what is left (docs/precision.md).
#include <algorithm>
#include <cmath>

#include "certified.hpp"

namespace hardmine::certified {
namespace {

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

}  // namespace

void Certified::admit(Shortlist& list, int64_t id, float upper, float lower, bool certain) const {
  list.ids.push_back(id);
  list.upper.push_back(upper);
  if (certain) raise_threshold(list, id, lower);  // only a certainly admissible candidate may
  if (list.ids.size() >= list.next_compaction) compact(list);
}

void Certified::raise_threshold(Shortlist& list, int64_t id, float lower) const {
  if (exclusion_.candidate_keys == nullptr) {
    keep_best(list.lower, k_, lower);
    if (static_cast<int64_t>(list.lower.size()) == k_) list.threshold = list.lower.front();
    return;
  }
  // A top-k keeps one candidate per key, so the threshold is the k-th best lower bound over
  // distinct keys: the entries are (lower, key) pairs, one per key, unordered (k is small).
  const int64_t key = exclusion_.candidate_keys[id];
  const auto same = std::find(list.lower_keys.begin(), list.lower_keys.end(), key);
  if (same != list.lower_keys.end()) {
    float& held = list.lower[static_cast<size_t>(same - list.lower_keys.begin())];
    if (lower <= held) return;
    held = lower;
  } else if (static_cast<int64_t>(list.lower.size()) < k_) {
    list.lower.push_back(lower);
    list.lower_keys.push_back(key);
  } else {
    const auto least = std::min_element(list.lower.begin(), list.lower.end());
    if (lower <= *least) return;
    *least = lower;
    list.lower_keys[static_cast<size_t>(least - list.lower.begin())] = key;
  }
  if (static_cast<int64_t>(list.lower.size()) == k_) {
    list.threshold = *std::min_element(list.lower.begin(), list.lower.end());
  }
}

double Certified::to_frame(int64_t query) const {
  const double cosine = scales_.queries != nullptr ? scales_.queries[query] : 1.0;
  return 1.0 / (std::ldexp(query_facts_[query].scale, frame_exponent_) * cosine);
}

bool Certified::limits(int64_t query, Limits& out) const {
  const double unit = to_frame(query);
  if (softmax_.temperature > 0) out.priority_unit = 1.0 / unit / softmax_.temperature;
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
    if (hinges_.positive != nullptr) {
      unsure |= yes;  // a violation's hinge needs its exact score
    } else {
      list.tally[f] += __builtin_popcount(yes);
    }
    if (unsure == 0) continue;
    if (unsure_any == 0) std::fill(filters, filters + kLanes, uint8_t{0});
    unsure_any |= unsure;
    for (uint32_t mask = unsure; mask != 0; mask &= mask - 1) filters[__builtin_ctz(mask)] |= uint8_t(1u << f);
  }
  for (uint32_t mask = unsure_any; mask != 0; mask &= mask - 1) {
    list.straddlers.push_back(c0 + __builtin_ctz(mask));
    list.straddled.push_back(filters[__builtin_ctz(mask)]);
  }
  if (list.straddlers.size() > cap_) go_exhaustive(list);  // a bound in the thick of the scores
}

void Certified::go_exhaustive(Shortlist& list) const {
  list.exhaustive = true;
  list.threshold = kInf;  // the screen skips the row from now on
  std::fill(std::begin(list.tally), std::end(list.tally), int64_t{0});  // every candidate is counted at the end
  std::vector<int64_t>().swap(list.ids);
  std::vector<float>().swap(list.upper);
  std::vector<int64_t>().swap(list.straddlers);
  std::vector<uint8_t>().swap(list.straddled);
}

// An exhaustive row's lists: every admissible candidate shortlisted with an infinite upper bound
// (so none is skipped) and every candidate a straddler of every filter (counted exactly), which
// finish() then treats as any other row's: the answer is that of the exact scores of all.
void Certified::list_every_candidate(int64_t query, Shortlist& list) const {
  const int64_t num = candidates_.rows;
  for (int64_t c = 0; c < num; ++c) {
    if (exclusion_.excludes(query, c)) continue;
    list.ids.push_back(c);
    list.upper.push_back(kInf);
  }
  if (tallies_.size == 0) return;
  list.straddlers.resize(static_cast<size_t>(num));
  for (int64_t c = 0; c < num; ++c) list.straddlers[static_cast<size_t>(c)] = c;
  list.straddled.assign(static_cast<size_t>(num), static_cast<uint8_t>((1u << tallies_.size) - 1));
}

double Certified::exact(int64_t query, const float* query_row, int64_t id, std::vector<float>& row_buffer) const {
  int64_t leading = 0;
  const float* c = rows_as_f32(candidates_, id, 1, row_buffer.data(), &leading);
  const double dot = int8::exact_dot(query_row, c, dim_);
  return cosine_ ? int8::exact_score(dot, query_norm2_[query], candidate_norm2_[id], true) : dot;
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
  if (kept > cap_) {  // near-ties everywhere (e.g. many duplicates): scoring every candidate is cheaper
    go_exhaustive(list);
    return;
  }
  list.next_compaction = std::max<size_t>(2 * kept, static_cast<size_t>(4 * k_ + 256));
}

void Certified::finish(int64_t query, Shortlist& list, std::vector<float>& row_buffer) const {
  int64_t* indices = out_indices_ + query * k_;
  float* scores = out_scores_ + query * k_;
  std::fill(indices, indices + k_, int64_t{-1});
  std::fill(scores, scores + k_, -kInf);
  if (!list.exhaustive) compact(list);  // the survivors of the final threshold (or too many of them)
  if (list.exhaustive) list_every_candidate(query, list);
  int64_t leading = 0;
  std::vector<float> query_row(static_cast<size_t>(dim_));
  const float* q = rows_as_f32(queries_, query, 1, row_buffer.data(), &leading);
  std::copy(q, q + dim_, query_row.begin());
  if (softmax_.temperature > 0) {
    finish_draws(query, list, query_row.data(), row_buffer);
  } else {
    select(query, list, query_row.data(), row_buffer);
  }
  if (list.exhaustive) out_shortlist_[query] = -1;  // reported as such (MiningStats.shortlists)
}

void Certified::select(int64_t query, Shortlist& list, const float* query_row, std::vector<float>& row_buffer) const {
  int64_t* indices = out_indices_ + query * k_;
  float* scores = out_scores_ + query * k_;
  // Re-score by decreasing upper bound, keeping the k-th best exact score: once the next upper
  // bound is below it, no candidate left can enter (ties included: they would need upper >= it).
  std::vector<std::pair<float, int64_t>> order(list.ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = {list.upper[i], list.ids[i]};
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  // exact scores in the bounds' units (docs/precision.md: they hold for the exact score); an
  // exhaustive row has no bounds (and may have no frame), so nothing stops its scan early
  const bool early_stop = !list.exhaustive && exclusion_.candidate_keys == nullptr;
  const double unit = early_stop ? to_frame(query) : 0.0;
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
  std::vector<std::pair<double, int64_t>> exact_scores;  // ranked by the exact score, ties by index
  std::vector<double> best;  // min-heap of the k best exact scores, in the frame
  size_t rescored = 0;
  for (size_t i = 0; i < order.size(); ++i, ++rescored) {
    const float upper = order[i].first;
    // (with keys the k best are over distinct keys: every survivor is re-scored)
    if (early_stop && static_cast<int64_t>(best.size()) == k_) {
      const double kth = best.front();
      // a margin far above the float64 rounding of the frame scores
      if (static_cast<double>(upper) < kth - std::fabs(kth) * 0x1p-40 - 0x1p-1000) break;
    }
    prefetch(i + kAhead);
    const int64_t id = order[i].second;
    const double score = exact(query, query_row, id, row_buffer);
    // NaN and -inf are never returned (rows of check_finite=False); the mining window applies to
    // the score returned, fl32(score), exactly as the fp32 engine's
    if (!(score > -kInf) || !bounds_.admits(query, static_cast<float>(score))) continue;
    if (early_stop) keep_best(best, k_, score * unit);
    exact_scores.emplace_back(score, id);
  }
  out_shortlist_[query] = static_cast<int64_t>(rescored);
  const auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  const int64_t* keys = exclusion_.candidate_keys;
  if (keys != nullptr) {  // the best candidate of each key, as the exact engine keeps
    std::sort(exact_scores.begin(), exact_scores.end(), better);
    std::vector<int64_t> seen;
    size_t kept = 0;
    for (size_t i = 0; i < exact_scores.size() && static_cast<int64_t>(kept) < k_; ++i) {
      if (std::find(seen.begin(), seen.end(), keys[exact_scores[i].second]) != seen.end()) continue;
      seen.push_back(keys[exact_scores[i].second]);
      exact_scores[kept++] = exact_scores[i];
    }
    exact_scores.resize(kept);
  }
  const size_t take = std::min(exact_scores.size(), static_cast<size_t>(k_));
  std::partial_sort(exact_scores.begin(), exact_scores.begin() + take, exact_scores.end(), better);
  for (size_t i = 0; i < take; ++i) {
    indices[i] = exact_scores[i].second;
    scores[i] = static_cast<float>(exact_scores[i].first);
  }
  count_straddlers(query, list, query_row, row_buffer);
}

// Candidates that may lie either side of a filter bound (violations: every possible violator),
// counted on their exact score.
void Certified::count_straddlers(int64_t query, Shortlist& list, const float* query_row,
                                 std::vector<float>& row_buffer) const {
  double hinge_sum = 0;
  for (size_t i = 0; i < list.straddlers.size(); ++i) {
    const int64_t id = list.straddlers[i];
    if (hinges_.positive != nullptr && exclusion_.excludes(query, id)) continue;  // a positive
    const float value = static_cast<float>(exact(query, query_row, id, row_buffer));
    for (int f = 0; f < tallies_.size; ++f) {
      if (!(list.straddled[i] >> f & 1)) continue;
      const float b = tallies_.bound[f][query];
      const bool counted = tallies_.below[f] ? (value < b && value > -kInf) : value > b;
      list.tally[f] += counted;
      if (counted && hinges_.positive != nullptr) {  // as the exact engine sums them
        hinge_sum += static_cast<double>(hinges_.margin) + static_cast<double>(value) -
                     static_cast<double>(hinges_.positive[query]);
      }
    }
  }
  for (int f = 0; f < tallies_.size; ++f) tallies_.counts[query * tallies_.size + f] += list.tally[f];
  if (hinges_.positive != nullptr) hinges_.out_sums[query] = hinge_sum;
}

}  // namespace hardmine::certified
