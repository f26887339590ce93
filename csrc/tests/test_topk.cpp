// topk() and its result handler against the float64 oracle: random rows, ties, k past the
// candidate count, empty sides, exclusions, keys, the score window, cosine, fp16 and strided views.
#include <doctest/doctest.h>

#include <map>
#include <vector>

#include "hardmine/engine.hpp"
#include "hardmine/topk_handler.hpp"
#include "reference.hpp"

using namespace hardmine;
using namespace hardmine::testing;

namespace {

struct Result {
  std::vector<int64_t> indices;
  std::vector<float> scores;
};

Result run_topk(const MatrixView& q, const MatrixView& c, int64_t k, const Exclusion& exclusion = {},
                const ScoreBounds& bounds = {}, const RowScales& scales = {}, BlockSizes blocks = {},
                int threads = 0) {
  Result r{std::vector<int64_t>(static_cast<size_t>(q.rows * k)), std::vector<float>(static_cast<size_t>(q.rows * k))};
  RunOptions options;
  options.blocks = blocks;
  options.num_threads = threads;
  topk(q, c, k, scales, exclusion, bounds, FilterCounts{}, options, r.indices.data(), r.scores.data());
  return r;
}

// The oracle's answer for query i: exact when the fp32 sums are exact (integer rows), otherwise
// every returned score within `tol` of the oracle's score at that rank.
template <class Admit>
void check_query(const Result& r, int64_t i, int64_t k, const std::vector<double>& scores, Admit admit,
                 double tol, std::map<int64_t, int64_t> keys_of = {}) {
  std::vector<int64_t> order = ranked(scores, admit);
  if (!keys_of.empty()) {  // one candidate per key: the best of each
    std::vector<int64_t> distinct;
    std::map<int64_t, bool> seen;
    for (int64_t j : order) {
      if (!seen[keys_of[j]]) distinct.push_back(j);
      seen[keys_of[j]] = true;
    }
    order = distinct;
  }
  const int64_t valid = std::min<int64_t>(k, static_cast<int64_t>(order.size()));
  for (int64_t rank = 0; rank < k; ++rank) {
    const int64_t got = r.indices[static_cast<size_t>(i * k + rank)];
    const float got_score = r.scores[static_cast<size_t>(i * k + rank)];
    if (rank >= valid) {
      CHECK(got == -1);
      CHECK(got_score == -kInf);
      continue;
    }
    const int64_t want = order[static_cast<size_t>(rank)];
    if (tol == 0) {
      CHECK(got == want);
      CHECK(got_score == static_cast<float>(scores[static_cast<size_t>(want)]));
    } else {
      REQUIRE(got >= 0);
      CHECK(admit(got));
      CHECK(std::abs(scores[static_cast<size_t>(got)] - scores[static_cast<size_t>(want)]) <= tol);
      CHECK(std::abs(got_score - scores[static_cast<size_t>(got)]) <= tol);
    }
  }
}

std::vector<double> score_row(const Matrix& q, int64_t i, const Matrix& c, bool cosine = false) {
  std::vector<double> s(static_cast<size_t>(c.rows));
  for (int64_t j = 0; j < c.rows; ++j) {
    s[static_cast<size_t>(j)] = dot(q, i, c, j) / (cosine ? norm(q, i) * norm(c, j) : 1.0);
  }
  return s;
}

const auto all = [](int64_t) { return true; };

}  // namespace

TEST_CASE("topk: random rows against the float64 oracle, several shapes, block sizes and threads") {
  for (auto [nq, nc, d, k] : {std::array<int64_t, 4>{37, 300, 24, 5}, {5, 1000, 7, 64}, {64, 129, 3, 1}}) {
    const Matrix q = random_matrix(nq, d, 1), c = random_matrix(nc, d, 2);
    for (BlockSizes blocks : {BlockSizes{}, BlockSizes{3, 64}, BlockSizes{1, 1000}}) {
      for (int threads : {1, 2}) {
        const Result r = run_topk(q.view(), c.view(), k, {}, {}, {}, blocks, threads);
        for (int64_t i = 0; i < nq; ++i) check_query(r, i, k, score_row(q, i, c), all, 1e-5);
      }
    }
  }
}

TEST_CASE("topk: ties and duplicate candidates go to the smaller index (integer rows, exact)") {
  const Matrix q = random_matrix(20, 4, 3, true), c = random_matrix(400, 4, 4, true);
  const Result r = run_topk(q.view(), c.view(), 30);
  for (int64_t i = 0; i < 20; ++i) check_query(r, i, 30, score_row(q, i, c), all, 0);
}

TEST_CASE("topk: k past the candidate count pads with -1 and -inf, as do no candidates and no queries") {
  const Matrix q = random_matrix(4, 3, 5, true), c = random_matrix(6, 3, 6, true);
  const Result r = run_topk(q.view(), c.view(), 10);
  for (int64_t i = 0; i < 4; ++i) check_query(r, i, 10, score_row(q, i, c), all, 0);
  const Matrix none{0, 3, {}};
  const Result empty = run_topk(q.view(), none.view(), 3);
  for (size_t t = 0; t < empty.indices.size(); ++t) {
    CHECK(empty.indices[t] == -1);
    CHECK(empty.scores[t] == -kInf);
  }
  CHECK(run_topk(none.view(), c.view(), 3).indices.empty());
}

TEST_CASE("topk: groups, CSR exclusions and keys (one candidate per key) against the oracle") {
  const int64_t nq = 12, nc = 200, k = 8;
  const Matrix q = random_matrix(nq, 4, 7, true), c = random_matrix(nc, 4, 8, true);
  std::vector<int64_t> query_groups(nq), candidate_groups(nc), keys(nc), indptr{0}, indices;
  std::map<int64_t, int64_t> keys_of;
  for (int64_t i = 0; i < nq; ++i) query_groups[i] = i % 5;
  for (int64_t j = 0; j < nc; ++j) {
    candidate_groups[j] = j % 7;
    keys[j] = j % 50;  // four candidates share each key
    keys_of[j] = keys[j];
  }
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t j = i; j < nc; j += 13) indices.push_back(j);
    indptr.push_back(static_cast<int64_t>(indices.size()));
  }
  Exclusion exclusion;
  exclusion.query_groups = query_groups.data();
  exclusion.candidate_groups = candidate_groups.data();
  exclusion.indptr = indptr.data();
  exclusion.indices = indices.data();
  exclusion.candidate_keys = keys.data();
  for (BlockSizes blocks : {BlockSizes{}, BlockSizes{5, 64}}) {
    const Result r = run_topk(q.view(), c.view(), k, exclusion, {}, {}, blocks);
    for (int64_t i = 0; i < nq; ++i) {
      check_query(r, i, k, score_row(q, i, c), [&](int64_t j) { return !exclusion.excludes(i, j); }, 0, keys_of);
    }
  }
}

TEST_CASE("topk: the score window (inclusive and exclusive) against the oracle") {
  const int64_t nq = 10, nc = 300, k = 12;
  const Matrix q = random_matrix(nq, 5, 9, true), c = random_matrix(nc, 5, 10, true);
  std::vector<float> upper(nq), lower(nq);
  for (int64_t i = 0; i < nq; ++i) {
    upper[i] = static_cast<float>(i % 4);
    lower[i] = -static_cast<float>(i % 3);
  }
  for (bool exclusive : {false, true}) {
    const ScoreBounds bounds{upper.data(), lower.data(), exclusive};
    const Result r = run_topk(q.view(), c.view(), k, {}, bounds);
    for (int64_t i = 0; i < nq; ++i) {
      const auto s = score_row(q, i, c);
      check_query(r, i, k, s, [&](int64_t j) { return bounds.admits(i, static_cast<float>(s[j])); }, 0);
    }
  }
}

TEST_CASE("topk: cosine through row scales against the oracle") {
  const Matrix q = random_matrix(16, 12, 11), c = random_matrix(500, 12, 12);
  std::vector<float> qs(16), cs(500);
  for (int64_t i = 0; i < 16; ++i) qs[i] = static_cast<float>(1.0 / norm(q, i));
  for (int64_t j = 0; j < 500; ++j) cs[j] = static_cast<float>(1.0 / norm(c, j));
  const Result r = run_topk(q.view(), c.view(), 9, {}, {}, RowScales{qs.data(), cs.data()});
  for (int64_t i = 0; i < 16; ++i) check_query(r, i, 9, score_row(q, i, c, true), all, 2e-6);
}

TEST_CASE("topk: fp16 rows and strided views give the fp32 contiguous answer") {
  const Matrix q = random_matrix(9, 6, 13, true), c = random_matrix(150, 6, 14, true);
  auto half_bits = [](float v) -> uint16_t {  // the integers in [-2, 2] as IEEE half
    const uint16_t magnitude[] = {0x0000, 0x3C00, 0x4000};
    const uint16_t bits = magnitude[static_cast<int>(std::abs(v))];
    return v < 0 ? static_cast<uint16_t>(bits | 0x8000) : bits;
  };
  std::vector<uint16_t> c16(c.values.size());
  for (size_t t = 0; t < c16.size(); ++t) c16[t] = half_bits(c.values[t]);
  const MatrixView c_half{c16.data(), c.rows, c.cols, c.cols, 1, DType::F16};
  // The queries stored every other column of a wider matrix, rows in reverse order.
  std::vector<float> wide(static_cast<size_t>(q.rows * q.cols * 2), 99.0f);
  for (int64_t i = 0; i < q.rows; ++i) {
    for (int64_t t = 0; t < q.cols; ++t) wide[static_cast<size_t>((q.rows - 1 - i) * 2 * q.cols + 2 * t)] = q.at(i, t);
  }
  const MatrixView q_strided{wide.data() + (q.rows - 1) * 2 * q.cols, q.rows, q.cols, -2 * q.cols, 2, DType::F32};
  const Result want = run_topk(q.view(), c.view(), 7);
  const Result got = run_topk(q_strided, c_half, 7);
  CHECK(got.indices == want.indices);
  CHECK(got.scores == want.scores);
  for (int64_t i = 0; i < q.rows; ++i) check_query(got, i, 7, score_row(q, i, c), all, 0);
}

TEST_CASE("TopKHandler: tiles fed in any split give the sorted best k (reservoir overflow path)") {
  const int64_t n = 1000, k = 3;
  std::vector<float> scores(n);
  for (int64_t j = 0; j < n; ++j) scores[j] = static_cast<float>((j * 37) % 101);  // many ties
  std::vector<double> as_double(scores.begin(), scores.end());
  for (int64_t tile : {1, 7, 64, 1000}) {
    std::vector<int64_t> out_indices(k);
    std::vector<float> out_scores(k);
    detail::TopKHandler handler(k, n, Exclusion{}, ScoreBounds{}, FilterCounts{}, out_indices.data(),
                                out_scores.data());
    auto state = handler.begin(0, 1);
    for (int64_t c0 = 0; c0 < n; c0 += tile) {
      handler.consume(state, 0, 1, c0, std::min(tile, n - c0), scores.data() + c0, tile);
    }
    handler.finish(state, 0, 1);
    const Result r{out_indices, out_scores};
    check_query(r, 0, k, as_double, all, 0);
  }
}
