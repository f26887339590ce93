// Every instruction-set version of the 64-lane mask loops against a scalar loop.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "hardmine/tiling.hpp"

using namespace hardmine;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// 64 lanes per row: random values with the thresholds' own values, NaN and infinities mixed in.
std::vector<std::vector<float>> rows() {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> real(-2.0f, 2.0f);
  std::vector<std::vector<float>> out;
  for (int r = 0; r < 50; ++r) {
    std::vector<float> row(64);
    for (float& v : row) v = real(gen);
    row[r % 64] = 0.5f;
    row[(r + 7) % 64] = -0.25f;
    if (r % 3 == 0) row[(r + 11) % 64] = kNaN;
    if (r % 4 == 0) row[(r + 13) % 64] = kInf;
    if (r % 5 == 0) row[(r + 17) % 64] = -kInf;
    out.push_back(row);
  }
  out.push_back(std::vector<float>(64, kNaN));
  out.push_back(std::vector<float>(64, 0.5f));
  return out;
}

uint64_t scalar_above(const float* x, float threshold) {
  uint64_t mask = 0;
  for (int t = 0; t < 64; ++t) {
    if (x[t] > threshold) mask |= uint64_t{1} << t;
  }
  return mask;
}

uint64_t scalar_within(const float* x, float low, float high) {
  uint64_t mask = 0;
  for (int t = 0; t < 64; ++t) {
    if (x[t] > low && x[t] <= high) mask |= uint64_t{1} << t;
  }
  return mask;
}

}  // namespace

TEST_CASE("mask_kernels lists the portable loop first and the dispatched one last") {
  const auto kernels = mask_kernels();
  REQUIRE(!kernels.empty());
  CHECK(std::string(kernels.front().name) == "portable");
  const bool dispatched_last = kernels.back().above == above_mask64 && kernels.back().within == within_mask64;
  CHECK(dispatched_last);
}

TEST_CASE("above_mask64: every version equals the scalar loop (NaN never set, ties not above)") {
  const float thresholds[] = {0.5f, -0.25f, 0.0f, -kInf, kInf, kNaN, 1.75f};
  for (const auto& kernel : mask_kernels()) {
    CAPTURE(std::string(kernel.name));
    for (const auto& row : rows()) {
      for (float t : thresholds) CHECK(kernel.above(row.data(), t) == scalar_above(row.data(), t));
    }
  }
}

TEST_CASE("within_mask64: every version equals the scalar loop (low exclusive, high inclusive)") {
  const float bounds[][2] = {{-0.25f, 0.5f}, {-kInf, 0.5f}, {0.5f, kInf}, {-kInf, kInf},
                             {0.5f, -0.25f}, {kNaN, 1.0f}, {-1.0f, kNaN}};
  for (const auto& kernel : mask_kernels()) {
    CAPTURE(std::string(kernel.name));
    for (const auto& row : rows()) {
      for (const auto& b : bounds) {
        CHECK(kernel.within(row.data(), b[0], b[1]) == scalar_within(row.data(), b[0], b[1]));
      }
    }
  }
}
