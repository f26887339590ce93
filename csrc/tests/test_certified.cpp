// The certified int8 / bf16 screen: its bounds hold every pair's exact score, and the re-scored
// answer is the exact oracle's (docs/precision.md), for the dot product and cosine.
#include <doctest/doctest.h>

#include <vector>

#include "hardmine/certified.hpp"
#include "reference.hpp"

using namespace hardmine;
using namespace hardmine::testing;

namespace {

// Rows of very different magnitudes and a constant row, beside plain random ones.
Matrix adversarial(int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m = random_matrix(rows, cols, seed);
  for (int64_t t = 0; t < cols; ++t) {
    m.values[static_cast<size_t>(0 * cols + t)] *= 1e6f;
    m.values[static_cast<size_t>(1 * cols + t)] *= 1e-6f;
    m.values[static_cast<size_t>(2 * cols + t)] = 0.5f;
  }
  m.values[static_cast<size_t>(3 * cols)] = 1e4f;  // one dominant coordinate
  return m;
}

std::vector<float> inverse_norms(const Matrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows));
  for (int64_t i = 0; i < m.rows; ++i) out[static_cast<size_t>(i)] = static_cast<float>(1.0 / norm(m, i));
  return out;
}

}  // namespace

TEST_CASE("int8_bounds: every pair's exact score lies within its certified bounds") {
  const Matrix q = adversarial(12, 40, 41), c = adversarial(90, 40, 42);
  const auto qs = inverse_norms(q), cs = inverse_norms(c);
  for (Codes codes : {Codes::Int8, Codes::Bf16}) {
    for (bool cosine : {false, true}) {
      std::vector<double> lower(q.rows * c.rows), upper(q.rows * c.rows);
      const RowScales scales = cosine ? RowScales{qs.data(), cs.data()} : RowScales{};
      int8_bounds(q.view(), c.view(), scales, lower.data(), upper.data(), codes);
      for (int64_t i = 0; i < q.rows; ++i) {
        for (int64_t j = 0; j < c.rows; ++j) {
          const double exact = dot(q, i, c, j) / (cosine ? norm(q, i) * norm(c, j) : 1.0);
          const size_t at = static_cast<size_t>(i * c.rows + j);
          CAPTURE(i);
          CAPTURE(j);
          CHECK(lower[at] <= exact * (1 + 1e-12) + 1e-300);
          CHECK(upper[at] >= exact * (1 - 1e-12) - 1e-300);
          CHECK(lower[at] <= upper[at]);
        }
      }
    }
  }
}

TEST_CASE("topk_int8 / bf16: the exact oracle's top-k, with ties by index (integer rows)") {
  const int64_t nq = 10, nc = 400, k = 7;
  const Matrix q = random_matrix(nq, 16, 43, true), c = random_matrix(nc, 16, 44, true);
  for (Codes codes : {Codes::Int8, Codes::Bf16}) {
    std::vector<int64_t> indices(nq * k), shortlist(nq);
    std::vector<float> scores(nq * k);
    topk_int8(q.view(), c.view(), k, RowScales{}, Exclusion{}, ScoreBounds{}, FilterCounts{}, RunOptions{},
              indices.data(), scores.data(), shortlist.data(), codes);
    for (int64_t i = 0; i < nq; ++i) {
      std::vector<double> s(nc);
      for (int64_t j = 0; j < nc; ++j) s[j] = dot(q, i, c, j);
      const auto order = ranked(s, [](int64_t) { return true; });
      for (int64_t r = 0; r < k; ++r) {
        CHECK(indices[i * k + r] == order[r]);
        CHECK(scores[i * k + r] == static_cast<float>(s[order[r]]));
      }
      CHECK((shortlist[i] == -1 || shortlist[i] >= k));
    }
  }
}

TEST_CASE("topk_int8 / bf16 under cosine: scores are fl32 of the exact score, the order the oracle's") {
  const int64_t nq = 8, nc = 300, k = 5;
  const Matrix q = adversarial(nq, 24, 45), c = adversarial(nc, 24, 46);
  const auto qs = inverse_norms(q), cs = inverse_norms(c);
  for (Codes codes : {Codes::Int8, Codes::Bf16}) {
    std::vector<int64_t> indices(nq * k), shortlist(nq);
    std::vector<float> scores(nq * k);
    topk_int8(q.view(), c.view(), k, RowScales{qs.data(), cs.data()}, Exclusion{}, ScoreBounds{}, FilterCounts{},
              RunOptions{}, indices.data(), scores.data(), shortlist.data(), codes);
    for (int64_t i = 0; i < nq; ++i) {
      std::vector<double> s(nc);
      for (int64_t j = 0; j < nc; ++j) s[j] = dot(q, i, c, j) / (norm(q, i) * norm(c, j));
      const auto order = ranked(s, [](int64_t) { return true; });
      for (int64_t r = 0; r < k; ++r) {
        const int64_t got = indices[i * k + r];
        REQUIRE(got >= 0);
        CHECK(std::abs(s[got] - s[order[r]]) <= 1e-12);
        CHECK(scores[i * k + r] == doctest::Approx(s[got]).epsilon(1e-7));
      }
    }
  }
}

TEST_CASE("violations_int8: the exact engine's counts and hardest negatives") {
  const int64_t nq = 9, nc = 250;
  const Matrix q = random_matrix(nq, 8, 47, true), c = random_matrix(nc, 8, 48, true);
  std::vector<float> positive(nq);
  for (int64_t i = 0; i < nq; ++i) positive[i] = static_cast<float>(dot(q, i, q, i)) / 2;
  std::vector<int64_t> count(nq), argmax(nq), shortlist(nq);
  std::vector<double> hinge(nq);
  std::vector<float> best(nq);
  violations_int8(q.view(), c.view(), positive.data(), 1.0f, RowScales{}, Exclusion{}, RunOptions{}, count.data(),
                  hinge.data(), best.data(), argmax.data(), shortlist.data());
  for (int64_t i = 0; i < nq; ++i) {
    int64_t want_count = 0, want_argmax = -1;
    double want_hinge = 0, want_best = -kInf;
    for (int64_t j = 0; j < nc; ++j) {
      const double s = dot(q, i, c, j);
      if (s > positive[i] - 1.0) {
        ++want_count;
        want_hinge += 1.0 + s - positive[i];
      }
      if (s > want_best) {
        want_best = s;
        want_argmax = j;
      }
    }
    CHECK(count[i] == want_count);
    CHECK(hinge[i] == doctest::Approx(want_hinge).epsilon(1e-12));
    CHECK(argmax[i] == want_argmax);
    CHECK(best[i] == static_cast<float>(want_best));
  }
}
