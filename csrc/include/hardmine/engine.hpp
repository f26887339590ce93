// Public entry points of the CPU engine: exact blocked top-k, margin
// violations and the dense similarity matrix.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "hardmine/views.hpp"

namespace hardmine {

/// How a call runs: block sizes, threads and the host's interrupt poll.
struct RunOptions {
  BlockSizes blocks;          ///< 0 entries are chosen by choose_block_sizes()
  int num_threads = 0;        ///< 0: every core OpenMP reports
  /// Polled about every 100 ms by the calling thread; returning true stops the
  /// call with hardmine::Interrupted. May be empty.
  std::function<bool()> interrupted;
};

/// Block sizes from the L2 cache size and the problem shape.
/// @param[in] queries, candidates, dim  problem shape
/// @param[in] threads  worker count, so that every worker gets query blocks
/// @param[in] requested  caller's choice; non-zero entries are kept
BlockSizes choose_block_sizes(int64_t queries, int64_t candidates, int64_t dim, int threads,
                              BlockSizes requested);

/// Exact top-k per query, ties by the smaller candidate index.
/// @param[in] queries (Q, d), candidates (C, d)
/// @param[in] k  results per query, k >= 1
/// @param[in] scales  cosine multipliers, or null pointers for the dot product
/// @param[in] exclusion  candidates that may not be returned for a query (and, with
///            keys, at most one candidate per key)
/// @param[in] bounds  per-query score window of admissible candidates
/// @param[in,out] tallies  optional per-query counts of scores beyond filter bounds
/// @param[out] out_indices (Q, k) row-major, -1 where fewer than k candidates are admissible
/// @param[out] out_scores (Q, k) row-major, -inf where out_indices is -1
void topk(const MatrixView& queries, const MatrixView& candidates, int64_t k, const RowScales& scales,
          const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
          const RunOptions& options, int64_t* out_indices, float* out_scores);

/// How sample() draws. A draw depends only on (seed, global query row, global candidate id
/// or its key), so it is the same for every block size, thread count and candidate range.
struct SampleRule {
  uint64_t seed = 0;
  double temperature = 0;  ///< 0: uniform; > 0: softmax, P proportional to exp(s / temperature)
  int64_t first_row = 0;   ///< global row of query 0
  int64_t first_id = 0;    ///< global id of candidate 0 (the start of a candidate range)
};

/// The seeded uniform (0, 1) draw of (seed, row, id): the splitmix64 finaliser, bit for bit
/// the one hardmine._draws.uniform computes.
double uniform_draw(uint64_t seed, int64_t row, int64_t id);

/// `count` admissible candidates per query drawn without replacement in one pass, with
/// O(count) state per query: every admissible candidate (with candidate keys: every key,
/// represented by its best candidate) gets a priority, -u for uniform draws and
/// s / temperature + Gumbel(u) for softmax draws (Gumbel-top-k), and the `count` highest
/// priorities are kept (equal ones by score, then by the smaller index).
/// @param[out] out_indices, out_scores (Q, count): the draws by score descending, ties by
///             the smaller index; -1 / -inf padded
/// @param[out] out_priorities (Q, count) float64, -inf where padded (to merge candidate ranges)
/// @param[in] top_k  with top_k > 0 the same pass also writes each query's top_k best admissible
///            candidates, exactly as topk() (a window from rank a > 0 draws count = n + a and drops
///            those of the top a: one pass instead of two)
/// @param[out] out_top_indices, out_top_scores (Q, top_k), or null when top_k is 0
void sample(const MatrixView& queries, const MatrixView& candidates, int64_t count, const RowScales& scales,
            const Exclusion& exclusion, const ScoreBounds& bounds, const FilterCounts& tallies,
            const SampleRule& rule, const RunOptions& options, int64_t* out_indices, float* out_scores,
            double* out_priorities, int64_t top_k = 0, int64_t* out_top_indices = nullptr,
            float* out_top_scores = nullptr);

/// Margin violations per query against every non-excluded candidate j:
/// count = #{s_j > s_p - margin}, hinge_sum = sum max(0, margin + s_j - s_p),
/// max_hinge/argmax = the hinge and index of the highest-scoring candidate.
/// @param[in] positive_scores (Q,) s_p per query
/// @param[out] count, hinge_sum, max_hinge, argmax  (Q,) each; argmax -1 when no candidate is admissible
/// @param[out] best_scores  optional (Q,) score of argmax, -inf when none (to merge candidate ranges)
void violations(const MatrixView& queries, const MatrixView& candidates, const float* positive_scores,
                float margin, const RowScales& scales, const Exclusion& exclusion,
                const RunOptions& options, int64_t* count, double* hinge_sum, float* max_hinge,
                int64_t* argmax, float* best_scores = nullptr);

/// The dense (Q, C) score matrix, row-major into out.
void similarity(const MatrixView& queries, const MatrixView& candidates, const RowScales& scales,
                const RunOptions& options, float* out);

/// Diagnostic for the test suite: runs the blocked driver over `num_blocks`
/// one-row query blocks with a handler that throws std::runtime_error in block
/// `failing_block`, proving that a worker's exception reaches the caller.
void fail_in_block(int64_t num_blocks, int64_t failing_block, int num_threads);

/// Human-readable build facts: BLAS, OpenMP, SIMD targets.
std::string blas_info();
bool has_openmp();
int max_threads();
std::string simd_info();

}  // namespace hardmine
