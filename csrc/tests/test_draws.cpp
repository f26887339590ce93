// The seeded draw and the selection orders (draws.hpp): the C++ twin of hardmine/_draws.py.
#include <doctest/doctest.h>

#include <vector>

#include "hardmine/draws.hpp"
#include "hardmine/engine.hpp"
#include "hardmine/topk_handler.hpp"
#include "seeded_draws.hpp"

using namespace hardmine;

TEST_CASE("draw_of equals hardmine._draws.uniform bit for bit") {
  // float.hex(hardmine._draws.uniform(seed, row, id)) from the Python twin.
  CHECK(draw_of(0, 0, 0) == 0x1.0000000000000p-54);
  CHECK(draw_of(1, 2, 3) == 0x1.e2d5d9a2b5b14p-1);
  CHECK(draw_of(12345, 678, 91011) == 0x1.58adae6c2ffe1p-2);
  CHECK(draw_of(9223372036854775813ULL, int64_t{1} << 40, -1) == 0x1.d470fa1084034p-1);
  CHECK(uniform_draw(12345, 678, 91011) == draw_of(12345, 678, 91011));
}

TEST_CASE("draw_of is uniform on (0, 1): chi-square over 20 bins") {
  constexpr int kBins = 20, kDraws = 200000;
  std::vector<int> counts(kBins, 0);
  for (int i = 0; i < kDraws; ++i) {
    const double u = draw_of(7, i / 100, i % 100);
    REQUIRE(u > 0.0);
    REQUIRE(u < 1.0);
    ++counts[static_cast<int>(u * kBins)];
  }
  double chi2 = 0;
  const double expected = static_cast<double>(kDraws) / kBins;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  CHECK(chi2 < 43.8);  // the 0.999 quantile of chi-square with 19 degrees of freedom
}

TEST_CASE("seeded_draws (the vectorised loop) equals draw_of with and without ids") {
  const std::vector<int64_t> ids{0, 5, -3, int64_t{1} << 50, 17, 17, 99, 1000, 3};
  std::vector<double> out(ids.size());
  detail::seeded_draws(42, 9, ids.data(), 0, static_cast<int64_t>(ids.size()), out.data());
  for (size_t t = 0; t < ids.size(); ++t) CHECK(out[t] == draw_of(42, 9, ids[t]));
  std::vector<double> range(37);
  detail::seeded_draws(42, 9, nullptr, 1000, 37, range.data());
  for (int64_t t = 0; t < 37; ++t) CHECK(range[static_cast<size_t>(t)] == draw_of(42, 9, 1000 + t));
}

TEST_CASE("ranks_before and kept_before: priority first, then score, then the smaller index") {
  CHECK(ranks_before(2.0f, 9, 1.0f, 0));
  CHECK(ranks_before(1.0f, 3, 1.0f, 4));
  CHECK_FALSE(ranks_before(1.0f, 4, 1.0f, 4));
  CHECK_FALSE(ranks_before(1.0f, 5, 1.0f, 4));
  CHECK(kept_before(0.5, 0.0f, 9, 0.25, 5.0f, 0));   // priority decides
  CHECK(kept_before(0.5, 2.0f, 9, 0.5, 1.0f, 0));    // equal priority: score
  CHECK(kept_before(0.5, 1.0f, 3, 0.5, 1.0f, 4));    // then the smaller index
  CHECK_FALSE(kept_before(0.5, 1.0f, 4, 0.5, 1.0f, 4));
}

TEST_CASE("the top-k order is the window order") {
  const float scores[] = {1.0f, 1.0f, -2.0f, 3.0f};
  for (int64_t a = 0; a < 4; ++a) {
    for (int64_t b = 0; b < 4; ++b) {
      CHECK(detail::better({scores[a], a}, {scores[b], b}) == ranks_before(scores[a], a, scores[b], b));
    }
  }
}
