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
#include "certified.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace hardmine {
namespace certified {

void Certified::pack_candidates(int threads) {
  const int64_t num = candidates_.rows;
  if (bf16_) {
    panel_bf16_.assign(static_cast<size_t>(panels_ * kLanes * padded_), uint16_t{0});
  } else {
    panel_codes_.assign(static_cast<size_t>(panels_ * kLanes * padded_), uint8_t{128});
  }
  std::vector<RowFacts> facts(static_cast<size_t>(num));
  candidate_norm2_.assign(cosine_ ? static_cast<size_t>(num) : 0, 0.0);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> buffer(static_cast<size_t>(dim_));
    std::vector<int8_t> codes(static_cast<size_t>(padded_));
    std::vector<uint16_t> halves(static_cast<size_t>(padded_));
#pragma omp for schedule(static)
    for (int64_t c = 0; c < num; ++c) {
      int64_t leading = 0;
      const float* row = rows_as_f32(candidates_, c, 1, buffer.data(), &leading);
      if (cosine_) candidate_norm2_[c] = int8::exact_dot(row, row, dim_);
      const int64_t lane = c % kLanes;
      if (bf16_) {  // panels of [padded/2][32 lanes][2] codes
        facts[c] = bf16::quantise(row, dim_, padded_, halves.data());
        uint16_t* panel = panel_bf16_.data() + (c / kLanes) * kLanes * padded_;
        for (int64_t i = 0; i < padded_; ++i) panel[(i / 2) * kLanes * 2 + lane * 2 + i % 2] = halves[i];
        continue;
      }
      facts[c] = int8::quantise(row, dim_, padded_, codes.data());
      uint8_t* panel = panel_codes_.data() + (c / kLanes) * kLanes * padded_;
      for (int64_t i = 0; i < padded_; ++i) {
        panel[(i / 4) * kLanes * 4 + lane * 4 + i % 4] = static_cast<uint8_t>(codes[i] + 128);
      }
    }
  }
  // One power of two 2^E brings the largest candidate factor near 1, so that neither side
  // of the frame overflows or underflows float32 (docs/precision.md).
  double largest = 0;
  for (int64_t c = 0; c < num; ++c) {
    const double cosine = scales_.candidates ? scales_.candidates[c] : 1.0;
    if (quantisable(facts[c])) largest = std::max({largest, facts[c].scale * cosine, facts[c].norm * cosine});
  }
  int exponent = 0;
  if (largest > 0) std::frexp(largest, &exponent);
  frame_exponent_ = exponent;
  frame_.scale.assign(static_cast<size_t>(panels_ * kLanes), 0.0f);
  frame_.residual.assign(frame_.scale.size(), 0.0f);
  frame_.coded.assign(frame_.scale.size(), 0.0f);
  for (int64_t c = 0; c < num; ++c) {
    if (!quantisable(facts[c])) {
      // a NaN, inf or near-overflow row (check_finite=False), which the bound does not cover: its
      // approximation 0 with an infinite slack leaves it undecided for every query, so that it
      // is always scored exactly (its codes are cleared: they may hold NaN)
      frame_.residual[c] = kInf;
      clear_codes(c);
      continue;
    }
    const double factor = std::ldexp(scales_.candidates ? scales_.candidates[c] : 1.0, -exponent);
    frame_.scale[c] = static_cast<float>(facts[c].scale * factor);
    frame_.residual[c] = float_up(facts[c].residual * factor);
    frame_.coded[c] = float_up(facts[c].coded * factor);
  }
}

void Certified::clear_codes(int64_t c) {
  const int64_t lane = c % kLanes;
  if (bf16_) {
    uint16_t* panel = panel_bf16_.data() + (c / kLanes) * kLanes * padded_;
    for (int64_t i = 0; i < padded_; ++i) panel[(i / 2) * kLanes * 2 + lane * 2 + i % 2] = 0;
    return;
  }
  uint8_t* panel = panel_codes_.data() + (c / kLanes) * kLanes * padded_;
  for (int64_t i = 0; i < padded_; ++i) panel[(i / 4) * kLanes * 4 + lane * 4 + i % 4] = 128;
}

void Certified::quantise_queries(int threads) {
  const int64_t num = queries_.rows;
  if (bf16_) {
    query_bf16_.assign(static_cast<size_t>((num + kRows) * padded_), uint16_t{0});
  } else {
    query_codes_.assign(static_cast<size_t>((num + kRows) * padded_), int8_t{0});
  }
  query_facts_.resize(static_cast<size_t>(num));
  query_norm2_.assign(cosine_ ? static_cast<size_t>(num) : 0, 0.0);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> buffer(static_cast<size_t>(dim_));
#pragma omp for schedule(static)
    for (int64_t q = 0; q < num; ++q) {
      int64_t leading = 0;
      const float* row = rows_as_f32(queries_, q, 1, buffer.data(), &leading);
      if (cosine_) query_norm2_[q] = int8::exact_dot(row, row, dim_);
      query_facts_[q] = bf16_ ? bf16::quantise(row, dim_, padded_, query_bf16_.data() + q * padded_)
                              : int8::quantise(row, dim_, padded_, query_codes_.data() + q * padded_);
    }
  }
}

void Certified::screen_rows(int64_t first, int count, ScreenRows& out) const {
  out.rows = count;
  for (int r = 0; r < count; ++r) {
    const RowFacts& facts = query_facts_[first + r];
    out.offset[r] = 128 * facts.code_sum;
    if (facts.scale == 0) continue;  // such a row falls back: its factors are never read
    // the query's side of the bound, in units of its scale A_q (docs/precision.md)
    out.norm[r] = float_up(facts.norm / facts.scale);
    out.residual[r] = float_up(facts.residual / facts.scale);
    if (bf16_) {
      // the float32 sums' error, gamma ||code_q|| ||code_c|| + 2 padded 2^-126, joins the term
      // that multiplies the candidate's ||c^|| (>= A_c / 2, docs/precision.md "bf16")
      out.offset[r] = 0;
      out.residual[r] = float_up(facts.residual / facts.scale +
                                 bf16::accumulation_error(padded_) * (facts.coded / facts.scale) +
                                 static_cast<double>(padded_) * 0x1p-124);
    }
  }
}

void Certified::screen_panel(int64_t first, const ScreenRows& rows, int64_t panel, int valid, uint32_t* masks,
                             float* uppers, float* lowers) const {
  const int64_t c0 = panel * kLanes;
  const float* scale = frame_.scale.data() + c0;
  const float* residual = frame_.residual.data() + c0;
  const float* coded = frame_.coded.data() + c0;
  if (bf16_) {
    alignas(64) float sums[kRows * kLanes];
    bf16::products(query_bf16_.data() + first * padded_, padded_, panel_bf16_.data() + panel * kLanes * padded_,
                   sums);
    int8::screen_sums(sums, rows, scale, residual, coded, valid, masks, uppers, lowers);
    return;
  }
  alignas(64) int32_t products[kRows * kLanes];
  int8::products(query_codes_.data() + first * padded_, padded_, panel_codes_.data() + panel * kLanes * padded_,
                 products);
  int8::screen(products, rows, scale, residual, coded, valid, masks, uppers, lowers);
}

void Certified::block(int64_t q0, int64_t nq, std::vector<Shortlist>& lists, BlockLoop& loop) {
  lists.assign(static_cast<size_t>(nq), Shortlist{});
  std::vector<Limits> row_limits(static_cast<size_t>(nq));
  for (int64_t r = 0; r < nq; ++r) {
    const RowFacts& facts = query_facts_[q0 + r];
    // a zero (or vanishing) row: every score is (nearly) 0; a NaN, inf or near-overflow row
    // (check_finite=False): the bound does not hold. Both are scored exhaustively.
    if (facts.scale == 0 || !quantisable(facts)) {
      go_exhaustive(lists[r]);
      continue;
    }
    lists[r].next_compaction = static_cast<size_t>(4 * k_ + 256);
    if (!limits(q0 + r, row_limits[r])) go_exhaustive(lists[r]);  // a NaN bound: decided on exact scores
  }
  // the queries' side of the screen, per micro-kernel block; only the thresholds change per panel
  std::vector<ScreenRows> groups(static_cast<size_t>((nq + kRows - 1) / kRows));
  for (size_t g = 0; g < groups.size(); ++g) {
    screen_rows(q0 + static_cast<int64_t>(g) * kRows, static_cast<int>(std::min<int64_t>(kRows, nq - g * kRows)),
                groups[g]);
    groups[g].every_lane = tallies_.size > 0 || softmax_.temperature > 0;
  }
  float uppers[kRows * kLanes], lowers[kRows * kLanes];
  uint32_t masks[kRows];
  for (int64_t panel = 0; panel < panels_; ++panel) {
    loop.poll();
    if (loop.stopped()) return;
    const int64_t c0 = panel * kLanes;
    const int valid = static_cast<int>(std::min<int64_t>(kLanes, candidates_.rows - c0));
    for (int64_t r0 = 0; r0 < nq; r0 += kRows) {
      ScreenRows& screened = groups[static_cast<size_t>(r0 / kRows)];
      for (int r = 0; r < screened.rows; ++r) {  // +inf: exhaustive; a softmax threshold is in priority units
        screened.threshold[r] = softmax_.temperature > 0 && !lists[r0 + r].exhaustive ? -kInf : lists[r0 + r].threshold;
      }
      screen_panel(q0 + r0, screened, panel, valid, masks, uppers, lowers);
      for (int r = 0; r < screened.rows; ++r) {
        Shortlist& list = lists[r0 + r];
        if (list.exhaustive) continue;
        const int64_t query = q0 + r0 + r;
        const Limits& limit = row_limits[r0 + r];
        if (softmax_.temperature > 0) {
          draw_lanes(list, query, limit, uppers + r * kLanes, lowers + r * kLanes, valid, c0);
          continue;
        }
        for (uint32_t mask = masks[r]; mask != 0 && !list.exhaustive; mask &= mask - 1) {
          const int l = __builtin_ctz(mask);
          const float upper = uppers[r * kLanes + l], lower = lowers[r * kLanes + l];
          if (lower >= limit.out_upper || upper <= limit.out_lower) continue;  // certainly outside the window
          if (exclusion_.excludes(query, c0 + l)) continue;
          admit(list, c0 + l, upper, lower, upper <= limit.in_upper && lower >= limit.in_lower);
        }
        if (tallies_.size > 0 && !list.exhaustive) {
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
  float uppers[kRows * kLanes], lowers[kRows * kLanes];
  uint32_t masks[kRows];
  const int64_t num = candidates_.rows;
  for (int64_t q = 0; q < queries_.rows; ++q) {
    const RowFacts& facts = query_facts_[q];
    if (facts.scale == 0) continue;  // a zero row has no frame (topk_int8 leaves it to the exact engine)
    // back from the frame to score units: times A_q 2^E (and the query's cosine scale)
    const double unit = std::ldexp(facts.scale, frame_exponent_) * (scales_.queries ? scales_.queries[q] : 1.0);
    ScreenRows screened;  // (the 11 rows after q in the codes are screened too, and ignored)
    screen_rows(q, 1, screened);
    screened.threshold[0] = -kInf;
    for (int64_t panel = 0; panel < panels_; ++panel) {
      const int64_t c0 = panel * kLanes;
      const int valid = static_cast<int>(std::min<int64_t>(kLanes, num - c0));
      screen_panel(q, screened, panel, valid, masks, uppers, lowers);
      for (int l = 0; l < valid; ++l) {
        lower[q * num + c0 + l] = lowers[l] * unit;
        upper[q * num + c0 + l] = uppers[l] * unit;
      }
    }
  }
}

}  // namespace certified

using certified::Certified;

bool certified_int8_native() { return int8::native(); }

bool certified_bf16_native() { return bf16::native(); }

void int8_bounds(const MatrixView& queries, const MatrixView& candidates, const RowScales& scales, double* lower,
                 double* upper, Codes codes) {
  Certified(queries, candidates, 1, scales, Exclusion{}, ScoreBounds{}, FilterCounts{}, nullptr, nullptr, nullptr,
            codes)
      .bounds(lower, upper);
}

namespace {

void check_int8(const MatrixView& queries, const MatrixView& candidates) {
  if (queries.cols != candidates.cols) {
    throw std::invalid_argument("queries and candidates must have the same number of columns");
  }
  if (queries.cols > kMaxInt8Dim) {
    throw std::invalid_argument("int8 scoring takes d <= " + std::to_string(kMaxInt8Dim) + " (int32 sums); got " +
                                std::to_string(queries.cols));
  }
}

}  // namespace

void topk_int8(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
               const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
               const RunOptions& options, int64_t* out_indices, float* out_scores, int64_t* out_shortlist,
               Codes codes) {
  if (k < 1) throw std::invalid_argument("k must be >= 1; got " + std::to_string(k));
  check_int8(queries, candidates);
  Certified(queries, candidates, k, scales, exclusion, bounds, tallies, out_indices, out_scores, out_shortlist, codes)
      .run(options);
}

void draw_softmax_certified(const MatrixView& queries, const MatrixView& candidates, int64_t count,
                            const RowScales& scales, const Exclusion& exclusion, const ScoreBounds& bounds,
                            const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
                            double* out_priorities, int64_t* out_shortlist, Codes codes) {
  if (count < 1) throw std::invalid_argument("count must be >= 1; got " + std::to_string(count));
  if (!(rule.temperature > 0) || std::isinf(rule.temperature)) {
    throw std::invalid_argument("softmax draws take a finite temperature > 0");
  }
  check_int8(queries, candidates);
  Certified(queries, candidates, count, scales, exclusion, bounds, FilterCounts{}, out_indices, out_scores,
            out_shortlist, codes, certified::Hinges{},
            certified::Softmax{rule.temperature, rule.seed, rule.first_row, rule.first_id, out_priorities})
      .run(options);
}

void violations_int8(const MatrixView& queries, const MatrixView& candidates, const float* positive_scores,
                     float margin, const RowScales& scales, const Exclusion& exclusion, const RunOptions& options,
                     int64_t* count, double* hinge_sum, float* best_scores, int64_t* argmax, int64_t* out_shortlist,
                     Codes codes) {
  check_int8(queries, candidates);
  // as the exact engine: a violation is s > fl32(s_p - margin)
  std::vector<float> thresholds(static_cast<size_t>(queries.rows));
  for (int64_t q = 0; q < queries.rows; ++q) thresholds[q] = positive_scores[q] - margin;
  std::fill(count, count + queries.rows, int64_t{0});
  FilterCounts tallies;
  tallies.size = 1;
  tallies.bound[0] = thresholds.data();
  tallies.counts = count;
  Certified(queries, candidates, 1, scales, exclusion, ScoreBounds{}, tallies, argmax, best_scores, out_shortlist,
            codes, certified::Hinges{positive_scores, margin, hinge_sum})
      .run(options);
}

}  // namespace hardmine

