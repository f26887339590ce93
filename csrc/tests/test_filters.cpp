// The filter encoding of views.hpp (exclusions, groups, keys, the score window) and the tallies.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "hardmine/tiling.hpp"
#include "hardmine/views.hpp"

using namespace hardmine;

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();
}

TEST_CASE("sorted_contains: empty, ends, middle, missing") {
  const std::vector<int64_t> v{1, 4, 4, 9, 12};
  const int64_t* b = v.data();
  const int64_t* e = v.data() + v.size();
  CHECK_FALSE(sorted_contains(b, b, 1));
  for (int64_t x : v) CHECK(sorted_contains(b, e, x));
  for (int64_t x : {0, 2, 5, 10, 13}) CHECK_FALSE(sorted_contains(b, e, x));
}

TEST_CASE("Exclusion: groups, CSR ids and keys, each alone and together") {
  const std::vector<int64_t> query_groups{0, 1};
  const std::vector<int64_t> candidate_groups{0, 1, 1, 2, 0};
  const std::vector<int64_t> indptr{0, 2, 2};
  const std::vector<int64_t> indices{1, 3};
  const std::vector<int64_t> keys{10, 20, 30, 20, 40};
  const std::vector<int64_t> key_indptr{0, 0, 1};
  const std::vector<int64_t> key_indices{20};

  Exclusion none;
  for (int64_t c = 0; c < 5; ++c) CHECK_FALSE(none.excludes(0, c));

  Exclusion groups;
  groups.query_groups = query_groups.data();
  groups.candidate_groups = candidate_groups.data();
  CHECK(groups.excludes(0, 0));
  CHECK(groups.excludes(0, 4));
  CHECK_FALSE(groups.excludes(0, 1));
  CHECK(groups.excludes(1, 2));

  Exclusion csr;
  csr.indptr = indptr.data();
  csr.indices = indices.data();
  CHECK(csr.excludes(0, 1));
  CHECK(csr.excludes(0, 3));
  CHECK_FALSE(csr.excludes(0, 2));
  CHECK_FALSE(csr.excludes(1, 1));  // query 1 has an empty row

  Exclusion by_key;
  by_key.candidate_keys = keys.data();
  by_key.key_indptr = key_indptr.data();
  by_key.key_indices = key_indices.data();
  CHECK_FALSE(by_key.excludes(0, 1));
  CHECK(by_key.excludes(1, 1));  // key 20 excluded for query 1: both its candidates
  CHECK(by_key.excludes(1, 3));
  CHECK_FALSE(by_key.excludes(1, 2));

  Exclusion all = groups;
  all.indptr = indptr.data();
  all.indices = indices.data();
  all.candidate_keys = keys.data();
  all.key_indptr = key_indptr.data();
  all.key_indices = key_indices.data();
  const bool expected[2][5] = {{true, true, false, true, true}, {false, true, true, true, false}};
  for (int64_t q = 0; q < 2; ++q) {
    for (int64_t c = 0; c < 5; ++c) CHECK(all.excludes(q, c) == expected[q][c]);
  }
}

TEST_CASE("ScoreBounds: inclusive window, exclusive band, one side open, NaN never admitted") {
  const std::vector<float> upper{1.0f, kInf};
  const std::vector<float> lower{0.0f, -kInf};
  ScoreBounds open;
  CHECK(open.admits(0, 123.0f));
  ScoreBounds window{upper.data(), lower.data(), false};
  CHECK(window.admits(0, 1.0f));
  CHECK(window.admits(0, 0.0f));
  CHECK_FALSE(window.admits(0, 1.0001f));
  CHECK_FALSE(window.admits(0, -0.0001f));
  CHECK_FALSE(window.admits(0, std::nanf("")));
  CHECK(window.admits(1, 1e30f));
  ScoreBounds band{upper.data(), lower.data(), true};
  CHECK_FALSE(band.admits(0, 1.0f));
  CHECK_FALSE(band.admits(0, 0.0f));
  CHECK(band.admits(0, 0.5f));
  ScoreBounds upper_only{upper.data(), nullptr, false};
  CHECK(upper_only.admits(0, -1e30f));
  CHECK_FALSE(upper_only.admits(0, 2.0f));
}

TEST_CASE("add_tallies counts scores beyond each bound over the 64-lane loop and its tail") {
  std::vector<float> row(150);
  for (size_t j = 0; j < row.size(); ++j) row[j] = static_cast<float>(j % 10) / 10.0f;  // 0.0 .. 0.9
  row[3] = -kInf;
  row[70] = std::nanf("");
  const std::vector<float> above_bound{0.5f, 0.5f};
  const std::vector<float> below_bound{0.2f, 0.2f};
  std::vector<int64_t> counts(4, 0);
  FilterCounts tallies;
  tallies.size = 2;
  tallies.bound[0] = above_bound.data();
  tallies.below[0] = false;
  tallies.bound[1] = below_bound.data();
  tallies.below[1] = true;
  tallies.counts = counts.data();
  add_tallies(tallies, row.data(), static_cast<int64_t>(row.size()), 1);
  int64_t above = 0, below = 0;
  for (float s : row) {
    above += s > 0.5f;
    below += s < 0.2f && s > -kInf;  // -inf is "no score", never counted
  }
  CHECK(counts[0] == 0);
  CHECK(counts[1] == 0);
  CHECK(counts[2] == above);
  CHECK(counts[3] == below);
  add_tallies(tallies, row.data(), static_cast<int64_t>(row.size()), 1);
  CHECK(counts[2] == 2 * above);  // added to, never overwritten
}
