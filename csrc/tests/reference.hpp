// The tests' oracle: scores in float64 from the rows as given, selections by plain sorting.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "hardmine/views.hpp"

namespace hardmine::testing {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;

  MatrixView view() const { return MatrixView{values.data(), rows, cols, cols, 1, DType::F32}; }
  float at(int64_t r, int64_t c) const { return values[static_cast<size_t>(r * cols + c)]; }
};

/// Uniform (-1, 1) entries; with `integers` small integers in [-2, 2] (fp32 sums exact, many ties).
inline Matrix random_matrix(int64_t rows, int64_t cols, uint32_t seed, bool integers = false) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> real(-1.0f, 1.0f);
  std::uniform_int_distribution<int> small(-2, 2);
  Matrix m{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (float& v : m.values) v = integers ? static_cast<float>(small(gen)) : real(gen);
  return m;
}

inline double dot(const Matrix& a, int64_t i, const Matrix& b, int64_t j) {
  double s = 0;
  for (int64_t t = 0; t < a.cols; ++t) s += static_cast<double>(a.at(i, t)) * b.at(j, t);
  return s;
}

inline double norm(const Matrix& a, int64_t i) { return std::sqrt(dot(a, i, a, i)); }

/// The admissible candidates of one query, best first (score descending, ties by smaller index).
template <class Admit>
std::vector<int64_t> ranked(const std::vector<double>& scores, Admit admit) {
  std::vector<int64_t> order;
  for (int64_t j = 0; j < static_cast<int64_t>(scores.size()); ++j) {
    if (admit(j)) order.push_back(j);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  return order;
}

}  // namespace hardmine::testing
