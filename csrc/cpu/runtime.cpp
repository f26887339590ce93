// BLAS binding, thread facts and block-size choice.
#include <pthread.h>
#include <unistd.h>

#include <atomic>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "hardmine/tiling.hpp"

// The four BLAS entry points the core uses, declared here rather than through a cblas.h, so the
// core compiles for any target without BLAS headers (the aarch64 build check) and links against
// either the scipy-openblas32 wheel (symbols prefixed, the Python build) or a system BLAS (the
// C++ unit tests). The CBLAS enum values are fixed by the CBLAS standard.
namespace {
constexpr int kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112;
}  // namespace
#if HARDMINE_BLAS_PREFIXED
extern "C" {
void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                       int);
void scipy_openblas_set_num_threads(int);
char* scipy_openblas_get_config(void);
char* scipy_openblas_get_corename(void);
}
#define HARDMINE_SGEMM scipy_cblas_sgemm
#define HARDMINE_BLAS_THREADS scipy_openblas_set_num_threads
#define HARDMINE_BLAS_CONFIG scipy_openblas_get_config
#define HARDMINE_BLAS_CORE scipy_openblas_get_corename
#define HARDMINE_BLAS_NAME "scipy-openblas32"
namespace {
bool blas_has_openblas_extras() { return true; }
}  // namespace
#else
// Any CBLAS; the OpenBLAS extras are weak, so a BLAS without them links too.
extern "C" {
void cblas_sgemm(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
__attribute__((weak)) void openblas_set_num_threads(int);
__attribute__((weak)) char* openblas_get_config(void);
__attribute__((weak)) char* openblas_get_corename(void);
}
#define HARDMINE_SGEMM cblas_sgemm
#define HARDMINE_BLAS_THREADS openblas_set_num_threads
#define HARDMINE_BLAS_CONFIG openblas_get_config
#define HARDMINE_BLAS_CORE openblas_get_corename
#define HARDMINE_BLAS_NAME "system BLAS"
namespace {
bool blas_has_openblas_extras() {
  return openblas_set_num_threads != nullptr && openblas_get_config != nullptr && openblas_get_corename != nullptr;
}
}  // namespace
#endif

namespace hardmine {
namespace {

// Parallelism comes from our own workers (one query block each), so BLAS must
// not spawn threads of its own inside them.
const bool blas_single_threaded = [] {
  if (blas_has_openblas_extras()) HARDMINE_BLAS_THREADS(1);
  return true;
}();

int64_t round_up(int64_t value, int64_t step) { return (value + step - 1) / step * step; }

std::atomic<bool> parallel_started{false};
std::atomic<bool> forked_child{false};

// Registered once at load; the child inherits parallel_started, so grandchildren
// of a process that ran a team are single-threaded too.
const bool fork_handler_registered = [] {
  pthread_atfork(nullptr, nullptr, [] {
    if (parallel_started.load()) forked_child.store(true);
  });
  return true;
}();

}  // namespace

bool forked_after_parallel() { return forked_child.load(std::memory_order_relaxed); }

void note_parallel_start() {
  (void)fork_handler_registered;
  parallel_started.store(true, std::memory_order_relaxed);
}

void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* out, int64_t ldo) {
  if (m == 0 || n == 0) return;
  HARDMINE_SGEMM(kCblasRowMajor, kCblasNoTrans, kCblasTrans, static_cast<int>(m), static_cast<int>(n),
                 static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f, out,
                 static_cast<int>(ldo));
}

BlockSizes choose_block_sizes(int64_t queries, int64_t candidates, int64_t dim, int threads,
                              BlockSizes requested) {
  (void)dim;  // OpenBLAS blocks over d itself; the tile shape above does not depend on it
  BlockSizes out = requested;
  if (out.query_rows <= 0) {
    // Big enough for BLAS to amortise packing each candidate tile over many
    // rows, small enough that every worker gets a block.
    const int64_t per_thread = (queries + threads - 1) / std::max(threads, 1);
    out.query_rows = std::clamp<int64_t>(round_up(per_thread, 8), 8, 1024);
  }
  if (out.candidate_rows <= 0) {
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 <= 0) l2 = 1 << 20;
    // A score tile of about 4x the per-core L2 measured best on Zen 4 (1 MiB L2,
    // benches/): smaller tiles repack the query block for BLAS more often per
    // score, larger ones spill the tile before the selection scan reads it back.
    const int64_t fit = 4 * static_cast<int64_t>(l2) / (4 * out.query_rows);
    out.candidate_rows = std::clamp<int64_t>(fit / 64 * 64, 256, 8192);
  }
  out.candidate_rows = std::min<int64_t>(out.candidate_rows, std::max<int64_t>(candidates, 1));
  out.query_rows = std::min<int64_t>(out.query_rows, std::max<int64_t>(queries, 1));
  return out;
}

namespace {
struct FailingHandler {
  int64_t failing_block;
  struct State {};
  State begin(int64_t, int64_t) const { return {}; }
  void consume(State&, int64_t q0, int64_t, int64_t, int64_t, const float*, int64_t) const {
    if (q0 == failing_block) {
      throw std::runtime_error("worker failure injected in query block " + std::to_string(q0));
    }
  }
  void finish(State&, int64_t, int64_t) const {}
};
}  // namespace

void fail_in_block(int64_t num_blocks, int64_t failing_block, int num_threads) {
  const std::vector<float> zeros(static_cast<size_t>(std::max<int64_t>(num_blocks, 1)), 0.0f);
  MatrixView queries{zeros.data(), num_blocks, 1, 1, 1, DType::F32};
  MatrixView candidates{zeros.data(), 1, 1, 1, 1, DType::F32};
  RunOptions options;
  options.blocks = {1, 1};
  options.num_threads = num_threads;
  FailingHandler handler{failing_block};
  for_each_score_tile(queries, candidates, RowScales{}, options, handler);
}

std::string blas_info() {
  (void)blas_single_threaded;
  if (!blas_has_openblas_extras()) return HARDMINE_BLAS_NAME;
  return std::string("OpenBLAS (" HARDMINE_BLAS_NAME ", ") + HARDMINE_BLAS_CONFIG() + "; kernel " +
         HARDMINE_BLAS_CORE() + ")";
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_threads() { return resolve_threads(0); }

}  // namespace hardmine
