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

#include "hardmine/cpu_features.hpp"
#include "hardmine/draws.hpp"
#include "seeded_draws.hpp"
#include "hardmine/topk_handler.hpp"

namespace hardmine {

namespace {

// out[t] = the draw of (seed, row, ids[t]), or of first_id + t without ids. The same loop
// built twice: with AVX-512DQ eight 64-bit multiplies run at once (vpmullq), which turns the
// hash from most of an open-window scan's extra cost into a small part of it.
inline __attribute__((always_inline)) void draws_loop(uint64_t seed, int64_t row, const int64_t* ids,
                                                      int64_t first_id, int64_t n, double* out) {
  if (ids != nullptr) {
    for (int64_t t = 0; t < n; ++t) out[t] = draw_of(seed, row, ids[t]);
  } else {
    for (int64_t t = 0; t < n; ++t) out[t] = draw_of(seed, row, first_id + t);
  }
}

void draws_portable(uint64_t seed, int64_t row, const int64_t* ids, int64_t first_id, int64_t n, double* out) {
  draws_loop(seed, row, ids, first_id, n, out);
}

using DrawsFn = void (*)(uint64_t, int64_t, const int64_t*, int64_t, int64_t, double*);
#ifdef HARDMINE_X86
__attribute__((target("avx512f,avx512dq"))) void draws_avx512(uint64_t seed, int64_t row, const int64_t* ids,
                                                              int64_t first_id, int64_t n, double* out) {
  draws_loop(seed, row, ids, first_id, n, out);
}

const DrawsFn draws = HARDMINE_CPU_HAS("avx512f") && HARDMINE_CPU_HAS("avx512dq") ? draws_avx512 : draws_portable;
#else
const DrawsFn draws = draws_portable;
#endif

struct Draw {
  double priority;
  float score;
  int64_t index;
  int64_t key;
};

inline bool ranks_before(const Draw& a, const Draw& b) {
  return hardmine::ranks_before(a.score, a.index, b.score, b.index);
}

// Kept before: higher priority, then window order (as a stable sort of the window would).
inline bool kept_before(const Draw& a, const Draw& b) {
  return hardmine::kept_before(a.priority, a.score, a.index, b.priority, b.score, b.index);
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

constexpr int64_t kChunk = 256;  // draws computed at a time, per query row

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
      double u_chunk[kChunk];
      double u_floor = 0.0;
      for (int64_t j = 0; j < nc; ++j) {
        if (j % kChunk == 0) {
          const int64_t n = std::min(kChunk, nc - j);
          draws(rule_.seed, rule_.first_row + query, keys ? keys + c0 + j : nullptr, rule_.first_id + c0 + j, n,
                u_chunk);
          u_floor = softmax_floor(row + j, n, heap);
        }
        const float s = row[j];
        // NaN and -inf (the padding score) are never drawn, as in top-k.
        if (!(s > -std::numeric_limits<float>::infinity()) || !bounds_.admits(query, s)) continue;
        const double u = u_chunk[j % kChunk];
        if (u < u_floor) continue;  // cannot reach the heap: no logarithm spent on it
        const int64_t candidate = c0 + j;
        const int64_t key = keys ? keys[candidate] : rule_.first_id + candidate;
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

  // Softmax draws: the smallest u with which a score of these columns could still reach a full
  // heap (priority s/T + G(u) >= the root's needs G(u) >= root - max s/T, i.e. u >= exp(-exp(-t))),
  // lowered by a relative 1e-6 on t so that rounding never rejects a candidate that belongs.
  double softmax_floor(const float* scores, int64_t n, const DrawHeap& heap) const {
    if (!(rule_.temperature > 0) || !heap.full()) return 0.0;
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) best = scores[t] > best ? scores[t] : best;
    double gap = heap.last().priority - static_cast<double>(best) / rule_.temperature;
    if (!std::isfinite(gap)) return 0.0;
    gap -= 1e-6 * (1.0 + std::fabs(gap));
    return std::exp(-std::exp(-gap));
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

// Both handlers over the same score tiles.
struct SampleAndTop {
  SampleHandler& sampler;
  detail::TopKHandler& top;

  struct State {
    SampleHandler::State sampled;
    detail::TopKHandler::State best;
  };

  State begin(int64_t q0, int64_t nq) const { return State{sampler.begin(q0, nq), top.begin(q0, nq)}; }
  void consume(State& state, int64_t q0, int64_t nq, int64_t c0, int64_t nc, const float* scores,
               int64_t ld) const {
    top.consume(state.best, q0, nq, c0, nc, scores, ld);
    sampler.consume(state.sampled, q0, nq, c0, nc, scores, ld);
  }
  void finish(State& state, int64_t q0, int64_t nq) const {
    top.finish(state.best, q0, nq);
    sampler.finish(state.sampled, q0, nq);
  }
};

}  // namespace

double uniform_draw(uint64_t seed, int64_t row, int64_t id) { return draw_of(seed, row, id); }

void detail::seeded_draws(uint64_t seed, int64_t row, const int64_t* ids, int64_t first_id, int64_t n,
                          double* out) {
  draws(seed, row, ids, first_id, n, out);
}

void sample(const MatrixView& queries, const MatrixView& candidates, int64_t count, const RowScales& scales,
            const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
            const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
            double* out_priorities, int64_t top_k, int64_t* out_top_indices, float* out_top_scores) {
  if (count < 1) throw std::invalid_argument("count must be >= 1; got " + std::to_string(count));
  if (!(rule.temperature >= 0)) throw std::invalid_argument("temperature must be >= 0 (0: uniform)");
  if (top_k < 0 || (top_k > 0 && (out_top_indices == nullptr || out_top_scores == nullptr))) {
    throw std::invalid_argument("top_k must be >= 0, with outputs when > 0");
  }
  SampleHandler sampler(count, exclusion, bounds, tallies, rule, out_indices, out_scores, out_priorities);
  if (top_k == 0) {
    for_each_score_tile(queries, candidates, scales, options, sampler);
    return;
  }
  // The filter tallies are counted once, by the sampler.
  detail::TopKHandler top(top_k, candidates.rows, exclusion, bounds, FilterCounts{}, out_top_indices,
                          out_top_scores);
  SampleAndTop both{sampler, top};
  for_each_score_tile(queries, candidates, scales, options, both);
}

}  // namespace hardmine
