// The dense score matrix, tile by tile, for small problems and tests.
#include <algorithm>
#include <stdexcept>

#include "hardmine/tiling.hpp"

namespace hardmine {
namespace {

class DenseHandler {
 public:
  DenseHandler(float* out, int64_t num_candidates) : out_(out), num_candidates_(num_candidates) {}
  struct State {};
  State begin(int64_t, int64_t) const { return {}; }
  void consume(State&, int64_t q0, int64_t nq, int64_t c0, int64_t nc, const float* scores,
               int64_t ld) const {
    for (int64_t i = 0; i < nq; ++i) {
      std::copy(scores + i * ld, scores + i * ld + nc, out_ + (q0 + i) * num_candidates_ + c0);
    }
  }
  void finish(State&, int64_t, int64_t) const {}

 private:
  float* out_;
  int64_t num_candidates_;
};

}  // namespace

void similarity(const MatrixView& queries, const MatrixView& candidates, const RowScales& scales,
                const RunOptions& options, float* out) {
  DenseHandler handler(out, candidates.rows);
  for_each_score_tile(queries, candidates, scales, options, handler);
}

}  // namespace hardmine
