// The blocked score driver shared by every CPU kernel: each worker owns a query
// block, walks every candidate tile, computes the score tile with BLAS and hands
// it to a result handler (FAISS's BlockResultHandler idea). At most one score
// tile per worker exists at any time.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "hardmine/engine.hpp"
#include "hardmine/views.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hardmine {

/// Rows [first, first + count) of a view as fp32 with unit column step: either
/// the caller's memory as it is, or converted into `buffer` (count * cols floats).
/// @param[out] leading  row step of the returned pointer, in floats
const float* rows_as_f32(const MatrixView& view, int64_t first, int64_t count, float* buffer,
                         int64_t* leading);

/// out[i, j] = dot(a row i, b row j) for an (m, k) and an (n, k) operand, single-threaded BLAS.
void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* out, int64_t ldo);

/// Bit t set when x[t] > threshold, for t < 64 (NaN never sets a bit). Dispatched
/// once at load time to an AVX-512, AVX2 or portable version.
extern uint64_t (*const above_mask64)(const float* x, float threshold);

/// Bit t set when low < x[t] <= high, for t < 64 (NaN never sets a bit).
extern uint64_t (*const within_mask64)(const float* x, float low, float high);

/// One instruction-set version of the two mask loops.
struct MaskKernels {
  const char* name;
  uint64_t (*above)(const float* x, float threshold);
  uint64_t (*within)(const float* x, float low, float high);
};

/// Every version this CPU can run, the portable one first (the unit tests check each against a
/// scalar loop; above_mask64 / within_mask64 are the last of them).
std::vector<MaskKernels> mask_kernels();

/// Adds to tallies.counts[query] each filter's count of scores in row[0, nc) beyond its bound.
void add_tallies(const FilterCounts& tallies, const float* row, int64_t nc, int64_t query);

/// Multiplies each score row by its query scale and each column by its candidate scale.
void apply_scales(float* scores, int64_t ld, int64_t rows, int64_t cols, const float* query_scales,
                  const float* candidate_scales);

/// True in a process forked after this one (or an ancestor) ran an OpenMP team:
/// GNU OpenMP's worker pool does not survive fork(), and entering a parallel
/// region there blocks forever, so such a child runs every call on its own thread.
bool forked_after_parallel();

/// Records that an OpenMP team of more than one thread is about to start.
void note_parallel_start();

/// Worker threads for a call: the request (0: every core), never more than there
/// are query blocks to share, and 1 in a child forked after a parallel region.
inline int resolve_threads(int requested, int64_t work_items = INT64_MAX) {
#ifdef _OPENMP
  if (forked_after_parallel()) return 1;
  const int wanted = requested > 0 ? requested : omp_get_max_threads();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, work_items)));
#else
  (void)requested;
  (void)work_items;
  return 1;
#endif
}

/// The parallel block loop every driver shares: OpenMP workers take blocks in turn (dynamic
/// schedule); the first exception of any worker stops the others and is rethrown on the
/// caller; only the calling thread may talk to the host, so it alone polls for Ctrl-C (about
/// every 100 ms), and Interrupted is thrown when the host asked to stop.
class BlockLoop {
 public:
  explicit BlockLoop(const RunOptions& options)
      : options_(options), last_poll_(std::chrono::steady_clock::now()) {}

  bool stopped() const { return stop_.load(std::memory_order_relaxed); }

  /// Asks the host whether to stop, on the calling thread (a no-op on the other workers).
  void poll() {
#ifdef _OPENMP
    if (omp_get_thread_num() != 0) return;
#endif
    if (!options_.interrupted) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_poll_ < std::chrono::milliseconds(100)) return;
    last_poll_ = now;
    if (options_.interrupted()) {
      interrupted_ = true;
      stop_.store(true);
    }
  }

  /// work(state, block) for every block in [0, num_blocks) on `threads` workers, each with its
  /// own state = make_state() (an allocation failure there is reported like any other error).
  template <class MakeState, class Work>
  void run(int threads, int64_t num_blocks, MakeState make_state, Work work) {
    if (threads > 1) note_parallel_start();
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      decltype(make_state()) state;
      const bool ready = guarded([&] { state = make_state(); });
#pragma omp for schedule(dynamic, 1)
      for (int64_t block = 0; block < num_blocks; ++block) {
        if (!ready || stopped()) continue;
        guarded([&] { work(state, block); });
      }
    }
    if (first_error_) std::rethrow_exception(first_error_);
    if (interrupted_) throw Interrupted();
  }

 private:
  template <class F>
  bool guarded(F f) {
    try {
      f();
      return true;
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!first_error_) first_error_ = std::current_exception();
      stop_.store(true);
      return false;
    }
  }

  const RunOptions& options_;
  std::atomic<bool> stop_{false};
  bool interrupted_ = false;
  std::exception_ptr first_error_;
  std::mutex error_mutex_;
  std::chrono::steady_clock::time_point last_poll_;
};

/// Runs handler over every (query block, candidate tile) pair.
/// Handler provides: State begin(q0, nq); consume(State&, q0, nq, c0, nc, scores, ld);
/// finish(State&, q0, nq). Exceptions from any worker are rethrown here.
template <class Handler>
void for_each_score_tile(const MatrixView& queries, const MatrixView& candidates,
                         const RowScales& scales, const RunOptions& options, Handler& handler) {
  if (queries.cols != candidates.cols) {
    throw std::invalid_argument("queries and candidates must have the same number of columns");
  }
  const int64_t num_queries = queries.rows;
  const int64_t num_candidates = candidates.rows;
  const int64_t dim = queries.cols;
  if (num_queries == 0) return;
  // With no candidates every block still runs begin() and finish(), so handlers
  // write their "nothing admissible" results (padding, -1) the usual way.
  const BlockSizes blocks = choose_block_sizes(num_queries, num_candidates, dim,
                                               resolve_threads(options.num_threads), options.blocks);
  const int64_t query_rows = blocks.query_rows;
  const int64_t tile_rows = blocks.candidate_rows;
  const int64_t num_blocks = (num_queries + query_rows - 1) / query_rows;
  // A thread per query block at most: more would only allocate idle tiles.
  const int threads = resolve_threads(options.num_threads, num_blocks);

  struct Buffers {
    std::vector<float> queries, tile, scores;
  };
  BlockLoop loop(options);
  loop.run(
      threads, num_blocks,
      [&] {
        Buffers buffers;
        buffers.queries.resize(static_cast<size_t>(query_rows * dim));
        buffers.tile.resize(static_cast<size_t>(tile_rows * dim));
        buffers.scores.resize(static_cast<size_t>(query_rows * tile_rows));
        return buffers;
      },
      [&](Buffers& buffers, int64_t block) {
        const int64_t q0 = block * query_rows;
        const int64_t nq = std::min(query_rows, num_queries - q0);
        int64_t ldq = 0;
        const float* qptr = rows_as_f32(queries, q0, nq, buffers.queries.data(), &ldq);
        auto state = handler.begin(q0, nq);
        for (int64_t c0 = 0; c0 < num_candidates; c0 += tile_rows) {
          loop.poll();
          if (loop.stopped()) return;
          const int64_t nc = std::min(tile_rows, num_candidates - c0);
          int64_t ldc = 0;
          const float* cptr = rows_as_f32(candidates, c0, nc, buffers.tile.data(), &ldc);
          gemm_nt(nq, nc, dim, qptr, ldq, cptr, ldc, buffers.scores.data(), nc);
          if (scales.queries != nullptr || scales.candidates != nullptr) {
            apply_scales(buffers.scores.data(), nc, nq, nc, scales.queries ? scales.queries + q0 : nullptr,
                         scales.candidates ? scales.candidates + c0 : nullptr);
          }
          handler.consume(state, q0, nq, c0, nc, buffers.scores.data(), nc);
        }
        handler.finish(state, q0, nq);
        loop.poll();
      });
}

}  // namespace hardmine
