// violations() and sample() against the float64 oracle.
#include <doctest/doctest.h>

#include <vector>

#include "hardmine/draws.hpp"
#include "hardmine/engine.hpp"
#include "reference.hpp"

using namespace hardmine;
using namespace hardmine::testing;

TEST_CASE("violations: count, hinge sum and the hardest negative (ties: smaller index), exact") {
  const int64_t nq = 15, nc = 333;
  const Matrix q = random_matrix(nq, 4, 21, true), c = random_matrix(nc, 4, 22, true);
  std::vector<int64_t> query_groups(nq), candidate_groups(nc);
  for (int64_t i = 0; i < nq; ++i) query_groups[i] = i;
  for (int64_t j = 0; j < nc; ++j) candidate_groups[j] = j % 20;
  Exclusion exclusion;
  exclusion.query_groups = query_groups.data();
  exclusion.candidate_groups = candidate_groups.data();
  std::vector<float> positive(nq);
  for (int64_t i = 0; i < nq; ++i) positive[i] = static_cast<float>(dot(q, i, c, i));  // c row i is in group i
  const float margin = 0.5f;
  for (BlockSizes blocks : {BlockSizes{}, BlockSizes{4, 64}}) {
    std::vector<int64_t> count(nq), argmax(nq);
    std::vector<double> hinge(nq);
    std::vector<float> max_hinge(nq), best(nq);
    RunOptions options;
    options.blocks = blocks;
    violations(q.view(), c.view(), positive.data(), margin, RowScales{}, exclusion, options, count.data(),
               hinge.data(), max_hinge.data(), argmax.data(), best.data());
    for (int64_t i = 0; i < nq; ++i) {
      int64_t want_count = 0, want_argmax = -1;
      double want_hinge = 0, want_best = -kInf;
      for (int64_t j = 0; j < nc; ++j) {
        if (exclusion.excludes(i, j)) continue;
        const double s = dot(q, i, c, j);
        if (s > positive[i] - margin) {
          ++want_count;
          want_hinge += margin + s - positive[i];
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
      CHECK(max_hinge[i] == static_cast<float>(std::max(0.0, margin + want_best - positive[i])));
    }
  }
}

TEST_CASE("sample, uniform: the `count` smallest seeded draws among admissible candidates") {
  const int64_t nq = 8, nc = 500, count = 6;
  const Matrix q = random_matrix(nq, 4, 31, true), c = random_matrix(nc, 4, 32, true);
  std::vector<float> upper(nq, 3.0f), lower(nq, -1.0f);
  const ScoreBounds bounds{upper.data(), lower.data(), false};
  SampleRule rule;
  rule.seed = 77;
  rule.first_row = 1000;  // draws follow the global row, not the block's
  std::vector<std::vector<int64_t>> answers;
  for (BlockSizes blocks : {BlockSizes{}, BlockSizes{3, 64}, BlockSizes{1, 7}}) {
    std::vector<int64_t> indices(nq * count), top(nq * 2);
    std::vector<float> scores(nq * count), top_scores(nq * 2);
    std::vector<double> priorities(nq * count);
    RunOptions options;
    options.blocks = blocks;
    sample(q.view(), c.view(), count, RowScales{}, Exclusion{}, bounds, FilterCounts{}, rule, options,
           indices.data(), scores.data(), priorities.data(), 2, top.data(), top_scores.data());
    answers.push_back(indices);
    for (int64_t i = 0; i < nq; ++i) {
      std::vector<double> s(nc);
      for (int64_t j = 0; j < nc; ++j) s[j] = dot(q, i, c, j);
      auto admissible = ranked(s, [&](int64_t j) { return bounds.admits(i, static_cast<float>(s[j])); });
      // the oracle's draws: smallest u first, then reported in window order
      std::vector<int64_t> drawn = admissible;
      std::stable_sort(drawn.begin(), drawn.end(), [&](int64_t a, int64_t b) {
        return draw_of(77, 1000 + i, a) < draw_of(77, 1000 + i, b);
      });
      drawn.resize(std::min<size_t>(drawn.size(), count));
      std::stable_sort(drawn.begin(), drawn.end(),
                       [&](int64_t a, int64_t b) { return ranks_before(s[a], a, s[b], b); });
      for (int64_t r = 0; r < count; ++r) {
        const size_t at = static_cast<size_t>(i * count + r);
        CHECK(indices[at] == drawn[r]);
        CHECK(scores[at] == static_cast<float>(s[drawn[r]]));
        CHECK(priorities[at] == -draw_of(77, 1000 + i, drawn[r]));
      }
      // the same pass's top ranks are topk()'s
      CHECK(top[i * 2] == admissible[0]);
      CHECK(top[i * 2 + 1] == admissible[1]);
    }
  }
  CHECK(answers[0] == answers[1]);
  CHECK(answers[0] == answers[2]);
}
