// Certified softmax draws (an open `softmax` window with precision="int8"/"bf16"): the sampler
// keeps per query the `k` highest priorities p = fl32(s) / T + G, G = -log(-log u) with u the
// seeded uniform of (row, id) (sample.cpp). With L <= s <= U from the screen, p lies in
// [L / T + G, U / T + G]: the shortlists of certified.hpp then run in priority units (the
// threshold is the k-th best lower priority of certainly admissible candidates), and the
// survivors are re-scored exactly, their priorities computed as the sampler computes them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "certified.hpp"
#include "hardmine/draws.hpp"
#include "seeded_draws.hpp"

namespace hardmine::certified {
namespace {

// a priority bound, widened far past its float64 rounding, rounded outward to float32
float priority_up(double p) { return int8::float_up(p + std::fabs(p) * 0x1p-40 + 0x1p-1000); }
float priority_down(double p) { return int8::float_down(p - std::fabs(p) * 0x1p-40 - 0x1p-1000); }

}  // namespace

void Certified::draw_lanes(Shortlist& list, int64_t query, const Limits& limits, const float* uppers,
                           const float* lowers, int valid, int64_t c0) const {
  double u[kLanes];  // with candidate keys a key draws once: its candidates share u
  const int64_t* keys = exclusion_.candidate_keys;
  detail::seeded_draws(softmax_.seed, softmax_.first_row + query, keys != nullptr ? keys + c0 : nullptr,
                       softmax_.first_id + c0, valid, u);
  // frame -> s / T units; the bounds are widened by 2^-22 below so that they also hold for fl32(s)
  const double unit = limits.priority_unit;
  double floor = 0;  // the smallest u that could still reach the threshold (as the sampler's floor)
  if (list.threshold > -kInf) {
    float best = -kInf;
    for (int l = 0; l < valid; ++l) best = std::max(best, uppers[l]);
    const double top = best * unit;
    double gap = list.threshold - (top + std::fabs(top) * 0x1p-20);
    if (std::isfinite(gap)) {
      gap -= 1e-6 * (1.0 + std::fabs(gap));
      floor = std::exp(-std::exp(-gap));
    }
  }
  for (int l = 0; l < valid; ++l) {
    if (u[l] < floor) continue;
    const float upper = uppers[l], lower = lowers[l];
    if (lower >= limits.out_upper || upper <= limits.out_lower) continue;  // certainly outside the window
    if (exclusion_.excludes(query, c0 + l)) continue;
    const double g = -std::log(-std::log(u[l]));
    const double high = upper * unit, low = lower * unit;
    admit(list, c0 + l, priority_up(high + std::fabs(high) * 0x1p-20 + g),
          priority_down(low - std::fabs(low) * 0x1p-20 + g),
          upper <= limits.in_upper && lower >= limits.in_lower);
  }
}

void Certified::finish_draws(int64_t query, Shortlist& list, const float* query_row,
                             std::vector<float>& row_buffer) const {
  struct Drawn {
    double priority;
    float score;   // fl32 of the exact score: the priority's, as the sampler's
    int64_t id;
    double exact;  // the output's window order, as the float64 reference's
  };
  std::vector<std::pair<float, int64_t>> order(list.ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = {list.upper[i], list.ids[i]};
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  const auto kept_first = [](const Drawn& a, const Drawn& b) {
    return kept_before(a.priority, a.score, a.id, b.priority, b.score, b.id);
  };
  std::vector<Drawn> kept;  // a heap whose root is the draw kept last
  size_t rescored = 0;
  for (size_t i = 0; i < order.size(); ++i, ++rescored) {
    // once the next upper bound is below the k-th priority (ties would need upper >= it), stop
    if (static_cast<int64_t>(kept.size()) == k_) {
      const double kth = kept.front().priority;
      if (static_cast<double>(order[i].first) < kth - std::fabs(kth) * 0x1p-40 - 0x1p-1000) break;
    }
    const int64_t id = order[i].second;
    const double exact = Certified::exact(query, query_row, id, row_buffer);
    const float s = static_cast<float>(exact);
    if (!(s > -kInf) || !bounds_.admits(query, s)) continue;
    const int64_t* keys = exclusion_.candidate_keys;
    const int64_t drawn_id = keys != nullptr ? keys[id] : softmax_.first_id + id;
    const double u = draw_of(softmax_.seed, softmax_.first_row + query, drawn_id);
    const Drawn drawn{static_cast<double>(s) / softmax_.temperature - std::log(-std::log(u)), s, id, exact};
    if (keys != nullptr) {  // one per key (its draw is shared, so its best is its best score)
      const auto same = std::find_if(kept.begin(), kept.end(), [&](const Drawn& d) { return keys[d.id] == keys[id]; });
      if (same != kept.end()) {
        if (kept_first(drawn, *same)) {
          *same = drawn;
          std::make_heap(kept.begin(), kept.end(), kept_first);
        }
        continue;
      }
    }
    if (static_cast<int64_t>(kept.size()) < k_) {
      kept.push_back(drawn);
      std::push_heap(kept.begin(), kept.end(), kept_first);
    } else if (kept_first(drawn, kept.front())) {
      std::pop_heap(kept.begin(), kept.end(), kept_first);
      kept.back() = drawn;
      std::push_heap(kept.begin(), kept.end(), kept_first);
    }
  }
  out_shortlist_[query] = static_cast<int64_t>(rescored);
  // the window order: by exact score, ties by index
  std::sort(kept.begin(), kept.end(),
            [](const Drawn& a, const Drawn& b) { return a.exact > b.exact || (a.exact == b.exact && a.id < b.id); });
  int64_t* indices = out_indices_ + query * k_;
  float* scores = out_scores_ + query * k_;
  double* priorities = softmax_.out_priorities + query * k_;
  std::fill(priorities, priorities + k_, -std::numeric_limits<double>::infinity());
  for (size_t r = 0; r < kept.size(); ++r) {
    indices[r] = kept[r].id;
    scores[r] = kept[r].score;
    priorities[r] = kept[r].priority;
  }
}

}  // namespace hardmine::certified
