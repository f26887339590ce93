// Certified low-precision scoring: int8 approximate scores with a per-pair error bound,
// exact re-scoring of a shortlist, the exact engine's answer (csrc/cpu/certified.cpp).
#pragma once

#include <cstdint>

#include "hardmine/engine.hpp"

namespace hardmine {

/// The low-precision codes a certified call screens with (docs/precision.md).
enum class Codes { Int8, Bf16 };

/// Largest d the int8 path takes: |sum of d products of int8 x (uint8 + 128)| stays in int32.
constexpr int64_t kMaxInt8Dim = 65536;

/// True when this CPU runs the AVX-512 VNNI kernel (otherwise a portable one, far slower).
bool certified_int8_native();

/// True when this CPU runs the bf16 path's AVX512_BF16 kernel (otherwise a portable one).
bool certified_bf16_native();

/// The exact top-k of topk() (exclusions, candidate keys, the mining window, filter tallies), found by int8 scores screened with a certified bound and a float64 re-score
/// of each query's shortlist and of the candidates that may lie either side of a tally bound.
/// Scores are fl32 of the exact score (docs/precision.md, "Exact scores"); the window and the
/// tallies apply to them. `scales` non-null means cosine (the values serve the screen only).
/// @param[out] out_shortlist (Q,) candidates re-scored per query, or -1 where the screen could
///             not decide the row (its shortlist outgrew its cap, the query row is zero, NaN or
///             inf, a bound is NaN): that row was scored exhaustively, every candidate exactly
void topk_int8(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
               const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
               const RunOptions& options, int64_t* out_indices, float* out_scores, int64_t* out_shortlist,
               Codes codes = Codes::Int8);

/// The exact engine's violations() through the same screen: the hardest negative is the
/// certified top-1, and every candidate that may violate the margin is re-scored (float64,
/// rounded to float32) for the count and the hinge sum. Scores, ids and out_shortlist as in
/// topk_int8 (-1: more possible violators than the cap, ..., so every candidate was scored).
/// @param[out] count, hinge_sum, best_scores, argmax  (Q,) each (best_scores: the hardest
///             negative's score, -inf when none)
void violations_int8(const MatrixView& queries, const MatrixView& candidates, const float* positive_scores,
                     float margin, const RowScales& scales, const Exclusion& exclusion, const RunOptions& options,
                     int64_t* count, double* hinge_sum, float* best_scores, int64_t* argmax, int64_t* out_shortlist,
                     Codes codes = Codes::Int8);

/// The sampler's uniform draw (sample(), temperature 0) with exact scores:
/// per query the non-excluded candidates are visited by decreasing priority (-u) and only
/// those are scored exactly and tested against the window, until `count` are admissible (a
/// window that admits few candidates may visit all). Outputs as sample()'s (window order, -1 /
/// -inf padded).
/// @param[out] out_scored (Q,) candidates scored per query
void draw_uniform_exact(const MatrixView& queries, const MatrixView& candidates, int64_t count,
                        const RowScales& scales, const Exclusion& exclusion, const ScoreBounds& bounds,
                        const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
                        double* out_priorities, int64_t* out_scored);

/// The sampler's softmax draw (sample(), temperature > 0) through the
/// certified screen: priorities p = fl32(s) / T - log(-log u) are bounded from the score
/// bounds, the `count` best kept by lower bound, the shortlist re-scored exactly. Outputs as
/// sample()'s; out_shortlist as topk_int8's (-1: every candidate of the row was scored).
void draw_softmax_certified(const MatrixView& queries, const MatrixView& candidates, int64_t count,
                            const RowScales& scales, const Exclusion& exclusion, const ScoreBounds& bounds,
                            const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
                            double* out_priorities, int64_t* out_shortlist, Codes codes = Codes::Int8);

/// Test diagnostic: the certified (lower, upper) bounds of every pair's score, (Q, C) row-major in
/// score units, as topk_int8 screens them; rows of zero queries are left untouched.
void int8_bounds(const MatrixView& queries, const MatrixView& candidates, const RowScales& scales, double* lower,
                 double* upper, Codes codes = Codes::Int8);

}  // namespace hardmine
