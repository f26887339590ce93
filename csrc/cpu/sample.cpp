// Sampling without replacement over every admissible candidate in one blocked pass. Each
// candidate (or key) gets a seeded priority and a per-query heap keeps the `count` highest:
// a selection, so the result does not depend on the order tiles arrive in, and the state
// is O(count) per query whatever the window size (Efraimidis-Spirakis / Gumbel-top-k).
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hardmine/tiling.hpp"

namespace hardmine {

double uniform_draw(uint64_t seed, int64_t row, int64_t id) {
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

namespace {

struct Draw {
  double priority;
  float score;
  int64_t index;
  int64_t key;
};

// Window order: higher score first, equal scores by the smaller index.
inline bool ranks_before(const Draw& a, const Draw& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// Kept before: higher priority, then window order (as a stable sort of the window would).
inline bool kept_before(const Draw& a, const Draw& b) {
  return a.priority > b.priority || (a.priority == b.priority && ranks_before(a, b));
}

// A heap whose root is the draw kept last (the first to go), with an optional key -> slot map
// so that a key's entry can be found and improved in place.
class DrawHeap {
 public:
  DrawHeap(Draw* slots, int64_t capacity, std::unordered_map<int64_t, int64_t>* where)
      : slots_(slots), capacity_(capacity), where_(where) {}

  int64_t size = 0;

  bool full() const { return size == capacity_; }
  const Draw& last() const { return slots_[0]; }

  int64_t find(int64_t key) const {
    const auto found = where_->find(key);
    return found == where_->end() ? -1 : found->second;
  }

  void push(const Draw& draw) {
    if (full()) {
      if (where_ != nullptr) where_->erase(slots_[0].key);
      place(0, draw);
      sift_down(0);
    } else {
      place(size++, draw);
      sift_up(size - 1);
    }
  }

  // The entry at `slot` was replaced by a draw kept no later than it: it moves away from the root.
  void improve(int64_t slot, const Draw& draw) {
    place(slot, draw);
    sift_down(slot);
  }

 private:
  void place(int64_t slot, const Draw& draw) {
    slots_[slot] = draw;
    if (where_ != nullptr) (*where_)[draw.key] = slot;
  }
  void swap(int64_t a, int64_t b) {
    const Draw held = slots_[a];
    place(a, slots_[b]);
    place(b, held);
  }
  void sift_up(int64_t slot) {
    while (slot > 0) {
      const int64_t parent = (slot - 1) / 2;
      if (!kept_before(slots_[parent], slots_[slot])) break;
      swap(parent, slot);
      slot = parent;
    }
  }
  void sift_down(int64_t slot) {
    for (;;) {
      int64_t worst = slot;
      for (int64_t child = 2 * slot + 1; child <= 2 * slot + 2 && child < size; ++child) {
        if (kept_before(slots_[worst], slots_[child])) worst = child;
      }
      if (worst == slot) return;
      swap(slot, worst);
      slot = worst;
    }
  }

  Draw* slots_;
  int64_t capacity_;
  std::unordered_map<int64_t, int64_t>* where_;
};

class SampleHandler {
 public:
  SampleHandler(int64_t count, const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
                const SampleRule& rule, int64_t* out_indices, float* out_scores, double* out_priorities)
      : count_(count),
        exclusion_(exclusion),
        bounds_(bounds),
        tallies_(tallies),
        rule_(rule),
        out_indices_(out_indices),
        out_scores_(out_scores),
        out_priorities_(out_priorities) {}

  struct State {
    std::vector<Draw> slots;
    std::vector<int64_t> sizes;
    std::vector<std::unordered_map<int64_t, int64_t>> where;  // per query, with keys only
  };

  State begin(int64_t, int64_t nq) const {
    State state;
    state.slots.resize(static_cast<size_t>(nq * count_));
    state.sizes.assign(static_cast<size_t>(nq), 0);
    if (exclusion_.candidate_keys != nullptr) state.where.resize(static_cast<size_t>(nq));
    return state;
  }

  void consume(State& state, int64_t q0, int64_t nq, int64_t c0, int64_t nc, const float* scores,
               int64_t ld) const {
    const int64_t* keys = exclusion_.candidate_keys;
    for (int64_t i = 0; i < nq; ++i) {
      const float* row = scores + i * ld;
      const int64_t query = q0 + i;
      DrawHeap heap(state.slots.data() + i * count_, count_, keys ? &state.where[i] : nullptr);
      heap.size = state.sizes[i];
      for (int64_t j = 0; j < nc; ++j) {
        const float s = row[j];
        // NaN and -inf (the padding score) are never drawn, as in top-k.
        if (!(s > -std::numeric_limits<float>::infinity()) || !bounds_.admits(query, s)) continue;
        const int64_t candidate = c0 + j;
        const int64_t key = keys ? keys[candidate] : rule_.first_id + candidate;
        const double u = uniform_draw(rule_.seed, rule_.first_row + query, key);
        const Draw draw{rule_.temperature > 0 ? static_cast<double>(s) / rule_.temperature - std::log(-std::log(u))
                                              : -u,
                        s, candidate, key};
        if (heap.full()) {
          // A key already kept has a priority >= the root's, and so does a better candidate of it.
          if (keys ? draw.priority < heap.last().priority : !kept_before(draw, heap.last())) continue;
        }
        if (exclusion_.excludes(query, candidate)) continue;
        if (keys != nullptr) {
          const int64_t slot = heap.find(key);
          if (slot >= 0) {
            // The key's best candidate represents it (its priority is then the key's largest).
            const Draw& held = state.slots[i * count_ + slot];
            if (ranks_before(draw, held)) heap.improve(slot, draw);
            continue;
          }
          if (heap.full() && !kept_before(draw, heap.last())) continue;
        }
        heap.push(draw);
      }
      state.sizes[i] = heap.size;
      add_tallies(tallies_, row, nc, query);
    }
  }

  void finish(State& state, int64_t q0, int64_t nq) const {
    for (int64_t i = 0; i < nq; ++i) {
      Draw* kept = state.slots.data() + i * count_;
      const int64_t size = state.sizes[i];
      std::sort(kept, kept + size, ranks_before);
      const int64_t offset = (q0 + i) * count_;
      for (int64_t r = 0; r < count_; ++r) {
        out_indices_[offset + r] = r < size ? kept[r].index : -1;
        out_scores_[offset + r] = r < size ? kept[r].score : -std::numeric_limits<float>::infinity();
        out_priorities_[offset + r] = r < size ? kept[r].priority : -std::numeric_limits<double>::infinity();
      }
    }
  }

 private:
  int64_t count_;
  Exclusion exclusion_;
  ScoreBounds bounds_;
  FilterCounts tallies_;
  SampleRule rule_;
  int64_t* out_indices_;
  float* out_scores_;
  double* out_priorities_;
};

}  // namespace

void sample(const MatrixView& queries, const MatrixView& candidates, int64_t count, const RowScales& scales,
            const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
            const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
            double* out_priorities) {
  if (count < 1) throw std::invalid_argument("count must be >= 1; got " + std::to_string(count));
  if (!(rule.temperature >= 0)) throw std::invalid_argument("temperature must be >= 0 (0: uniform)");
  SampleHandler handler(count, exclusion, bounds, tallies, rule, out_indices, out_scores, out_priorities);
  for_each_score_tile(queries, candidates, scales, options, handler);
}

}  // namespace hardmine
