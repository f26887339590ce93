// pybind11 glue for the CPU core: NumPy arrays -> views, checks that keep a
// direct caller from crashing the process, GIL release, Ctrl-C polling.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "hardmine/build_info.hpp"
#include "hardmine/engine.hpp"
#include "hardmine/tiling.hpp"

namespace py = pybind11;
using hardmine::DType;
using hardmine::MatrixView;

namespace {

std::string shape_string(const py::array& a) {
  std::string out = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) out += (i ? ", " : "") + std::to_string(a.shape(i));
  return out + (a.ndim() == 1 ? ",)" : ")");
}

MatrixView as_view(const py::array& array, int dtype_code, const char* name) {
  if (array.ndim() != 2) {
    throw py::value_error(std::string(name) + " must be 2-D (n, d); got shape " + shape_string(array));
  }
  if (dtype_code < 0 || dtype_code > 2) {
    throw py::value_error(std::string(name) + ": unknown dtype code " + std::to_string(dtype_code));
  }
  const auto dtype = static_cast<DType>(dtype_code);
  const py::ssize_t expected_size = dtype == DType::F32 ? 4 : 2;
  const char kind = array.dtype().kind();
  const bool kind_ok = dtype == DType::F32 ? kind == 'f' : (kind == 'u' || kind == 'i');
  if (array.itemsize() != expected_size || !kind_ok) {
    throw py::type_error(std::string(name) + " must hold float32 (or uint16 bit patterns for "
                         "float16/bfloat16) matching its dtype code");
  }
  const py::ssize_t s0 = array.strides(0);
  const py::ssize_t s1 = array.strides(1);
  if (s0 % expected_size != 0 || s1 % expected_size != 0) {
    throw py::value_error(std::string(name) + " has strides that are not a multiple of its item size");
  }
  MatrixView view;
  view.data = array.data();
  view.rows = array.shape(0);
  view.cols = array.shape(1);
  view.row_stride = s0 / expected_size;
  view.col_stride = s1 / expected_size;
  view.dtype = dtype;
  return view;
}

template <class T>
const T* contiguous_input(const std::optional<py::array>& array, py::ssize_t length, const char* name) {
  if (!array) return nullptr;
  const py::array& a = *array;
  if (!a.dtype().is(py::dtype::of<T>()) || a.ndim() != 1 ||
      !(a.flags() & py::array::c_style)) {
    throw py::type_error(std::string(name) + " must be a contiguous 1-D " +
                         std::string(py::str(py::dtype::of<T>())) + " array");
  }
  if (length >= 0 && a.shape(0) != length) {
    throw py::value_error(std::string(name) + " must have length " + std::to_string(length) +
                          "; got " + std::to_string(a.shape(0)));
  }
  return static_cast<const T*>(a.data());
}

template <class T>
T* output(py::array& a, std::vector<py::ssize_t> shape, const char* name) {
  if (!a.dtype().is(py::dtype::of<T>()) || !(a.flags() & py::array::c_style) || !a.writeable()) {
    throw py::type_error(std::string(name) + " must be a writeable C-contiguous " +
                         std::string(py::str(py::dtype::of<T>())) + " array");
  }
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(i) == shape[i];
  if (!same) throw py::value_error(std::string(name) + " has the wrong shape " + shape_string(a));
  return static_cast<T*>(a.mutable_data());
}

void check_sorted_csr(const int64_t* indptr, const int64_t* indices, int64_t nnz, int64_t num_queries,
                      const std::string& name, int64_t id_limit) {
  if (indptr[0] != 0 || indptr[num_queries] != nnz) {
    throw py::value_error(name + "_indptr must start at 0 and end at len(" + name + "_indices)");
  }
  for (int64_t q = 0; q < num_queries; ++q) {
    if (indptr[q + 1] < indptr[q]) {
      throw py::value_error(name + "_indptr must be non-decreasing; row " + std::to_string(q));
    }
    for (int64_t p = indptr[q]; p < indptr[q + 1]; ++p) {
      const int64_t id = indices[p];
      if (id_limit >= 0 && (id < 0 || id >= id_limit)) {
        throw py::value_error(name + "_indices: id " + std::to_string(id) + " of query " +
                              std::to_string(q) + " is outside [0, " + std::to_string(id_limit) + ")");
      }
      if (p > indptr[q] && indices[p - 1] > id) {
        throw py::value_error(name + "_indices must be sorted within each query; query " +
                              std::to_string(q));
      }
    }
  }
}

hardmine::Exclusion as_exclusion(const std::optional<py::array>& indptr,
                                 const std::optional<py::array>& indices,
                                 const std::optional<py::array>& query_groups,
                                 const std::optional<py::array>& candidate_groups, int64_t num_queries,
                                 int64_t num_candidates) {
  hardmine::Exclusion exclusion;
  if (indptr.has_value() != indices.has_value()) {
    throw py::value_error("exclude_indptr and exclude_indices come together");
  }
  if (query_groups.has_value() != candidate_groups.has_value()) {
    throw py::value_error("query_groups and candidate_groups come together");
  }
  if (indptr) {
    exclusion.indptr = contiguous_input<int64_t>(indptr, num_queries + 1, "exclude_indptr");
    exclusion.indices = contiguous_input<int64_t>(indices, -1, "exclude_indices");
    check_sorted_csr(exclusion.indptr, exclusion.indices, indices->shape(0), num_queries, "exclude",
                     num_candidates);
  }
  if (query_groups) {
    exclusion.query_groups = contiguous_input<int64_t>(query_groups, num_queries, "query_groups");
    exclusion.candidate_groups =
        contiguous_input<int64_t>(candidate_groups, num_candidates, "candidate_groups");
  }
  return exclusion;
}

void add_keys(hardmine::Exclusion& exclusion, const std::optional<py::array>& candidate_keys,
              const std::optional<py::array>& key_indptr, const std::optional<py::array>& key_indices,
              int64_t num_queries, int64_t num_candidates) {
  if (key_indptr.has_value() != key_indices.has_value()) {
    throw py::value_error("excluded_key_indptr and excluded_key_indices come together");
  }
  if (key_indptr && !candidate_keys) throw py::value_error("excluded keys need candidate_keys");
  if (candidate_keys) {
    exclusion.candidate_keys = contiguous_input<int64_t>(candidate_keys, num_candidates, "candidate_keys");
  }
  if (key_indptr) {
    exclusion.key_indptr = contiguous_input<int64_t>(key_indptr, num_queries + 1, "excluded_key_indptr");
    exclusion.key_indices = contiguous_input<int64_t>(key_indices, -1, "excluded_key_indices");
    check_sorted_csr(exclusion.key_indptr, exclusion.key_indices, key_indices->shape(0), num_queries,
                     "excluded_key", -1);
  }
}

hardmine::ScoreBounds as_bounds(const std::optional<py::array>& upper_bounds,
                               const std::optional<py::array>& lower_bounds, bool exclusive_bounds,
                               int64_t num_queries) {
  hardmine::ScoreBounds bounds;
  bounds.upper = contiguous_input<float>(upper_bounds, num_queries, "upper_bounds");
  bounds.lower = contiguous_input<float>(lower_bounds, num_queries, "lower_bounds");
  bounds.exclusive = exclusive_bounds;
  return bounds;
}

hardmine::FilterCounts as_tallies(const std::vector<py::array>& count_bounds, const std::vector<bool>& count_below,
                                  std::optional<py::array>& out_counts, int64_t num_queries) {
  hardmine::FilterCounts tallies;
  if (count_bounds.size() > hardmine::FilterCounts::kMaxFilters ||
      count_bounds.size() != count_below.size() || (!count_bounds.empty() && !out_counts)) {
    throw py::value_error("count_bounds, count_below and out_counts must match (at most 6 filters)");
  }
  tallies.size = static_cast<int>(count_bounds.size());
  for (int f = 0; f < tallies.size; ++f) {
    tallies.bound[f] = contiguous_input<float>(std::optional<py::array>(count_bounds[f]), num_queries,
                                               "count_bounds");
    tallies.below[f] = count_below[f];
  }
  if (tallies.size > 0) {
    tallies.counts = output<int64_t>(*out_counts, {num_queries, tallies.size}, "out_counts");
  }
  return tallies;
}

hardmine::RunOptions run_options(int64_t query_rows, int64_t candidate_rows, int num_threads) {
  if (query_rows < 0 || candidate_rows < 0) throw py::value_error("block sizes must be >= 0");
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0");
  hardmine::RunOptions options;
  options.blocks.query_rows = query_rows;
  options.blocks.candidate_rows = candidate_rows;
  options.num_threads = num_threads;
  options.interrupted = [] {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  };
  return options;
}

// Runs pure C++ without the GIL; an interrupt leaves Python's error set.
template <class Fn>
void run_released(Fn&& fn) {
  bool interrupted = false;
  {
    py::gil_scoped_release release;
    try {
      fn();
    } catch (const hardmine::Interrupted&) {
      interrupted = true;
    }
  }
  if (interrupted) throw py::error_already_set();
}

void check_dims(const MatrixView& q, const MatrixView& c) {
  if (q.cols != c.cols) {
    throw py::value_error("queries and candidates must have the same dimension; got " +
                          std::to_string(q.cols) + " and " + std::to_string(c.cols));
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "hardmine CPU core (C++17, OpenMP, BLAS score tiles)";

  m.def(
      "topk",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         int64_t k, std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         std::optional<py::array> exclude_indptr, std::optional<py::array> exclude_indices,
         std::optional<py::array> query_groups, std::optional<py::array> candidate_groups,
         py::array out_indices, py::array out_scores, int64_t query_rows, int64_t candidate_rows,
         int num_threads, std::optional<py::array> candidate_keys,
         std::optional<py::array> excluded_key_indptr, std::optional<py::array> excluded_key_indices,
         std::optional<py::array> upper_bounds, std::optional<py::array> lower_bounds,
         bool exclusive_bounds, std::vector<py::array> count_bounds, std::vector<bool> count_below,
         std::optional<py::array> out_counts) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        if (k < 1) throw py::value_error("k must be >= 1; got " + std::to_string(k));
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups,
                                      q.rows, c.rows);
        add_keys(exclusion, candidate_keys, excluded_key_indptr, excluded_key_indices, q.rows, c.rows);
        const auto bounds = as_bounds(upper_bounds, lower_bounds, exclusive_bounds, q.rows);
        const auto tallies = as_tallies(count_bounds, count_below, out_counts, q.rows);
        int64_t* indices = output<int64_t>(out_indices, {q.rows, k}, "out_indices");
        float* scores = output<float>(out_scores, {q.rows, k}, "out_scores");
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] { hardmine::topk(q, c, k, scales, exclusion, bounds, tallies, options, indices, scores); });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("k"), py::arg("query_scales"), py::arg("candidate_scales"), py::arg("exclude_indptr"),
      py::arg("exclude_indices"), py::arg("query_groups"), py::arg("candidate_groups"),
      py::arg("out_indices"), py::arg("out_scores"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0, py::arg("candidate_keys") = py::none(),
      py::arg("excluded_key_indptr") = py::none(), py::arg("excluded_key_indices") = py::none(),
      py::arg("upper_bounds") = py::none(), py::arg("lower_bounds") = py::none(),
      py::arg("exclusive_bounds") = false, py::arg("count_bounds") = std::vector<py::array>{},
      py::arg("count_below") = std::vector<bool>{}, py::arg("out_counts") = py::none(),
      "Exact blocked top-k into preallocated outputs. Use hardmine.topk / hardmine.mine instead.");

  m.def(
      "sample",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         int64_t count, uint64_t seed, double temperature, int64_t first_row, int64_t first_id,
         std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         std::optional<py::array> exclude_indptr, std::optional<py::array> exclude_indices,
         std::optional<py::array> query_groups, std::optional<py::array> candidate_groups,
         py::array out_indices, py::array out_scores, py::array out_priorities, int64_t query_rows,
         int64_t candidate_rows, int num_threads, std::optional<py::array> candidate_keys,
         std::optional<py::array> excluded_key_indptr, std::optional<py::array> excluded_key_indices,
         std::optional<py::array> upper_bounds, std::optional<py::array> lower_bounds,
         bool exclusive_bounds, std::vector<py::array> count_bounds, std::vector<bool> count_below,
         std::optional<py::array> out_counts, int64_t top_k, std::optional<py::array> out_top_indices,
         std::optional<py::array> out_top_scores) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        if (top_k < 0 || (top_k > 0) != (out_top_indices.has_value() && out_top_scores.has_value())) {
          throw py::value_error("top_k must be >= 0, with out_top_indices and out_top_scores exactly when > 0");
        }
        if (count < 1) throw py::value_error("count must be >= 1; got " + std::to_string(count));
        if (!(temperature >= 0) || std::isinf(temperature)) {
          throw py::value_error("temperature must be finite and >= 0 (0: uniform draws)");
        }
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups,
                                      q.rows, c.rows);
        add_keys(exclusion, candidate_keys, excluded_key_indptr, excluded_key_indices, q.rows, c.rows);
        const auto bounds = as_bounds(upper_bounds, lower_bounds, exclusive_bounds, q.rows);
        const auto tallies = as_tallies(count_bounds, count_below, out_counts, q.rows);
        int64_t* indices = output<int64_t>(out_indices, {q.rows, count}, "out_indices");
        float* scores = output<float>(out_scores, {q.rows, count}, "out_scores");
        double* priorities = output<double>(out_priorities, {q.rows, count}, "out_priorities");
        int64_t* top_indices =
            top_k > 0 ? output<int64_t>(*out_top_indices, {q.rows, top_k}, "out_top_indices") : nullptr;
        float* top_scores = top_k > 0 ? output<float>(*out_top_scores, {q.rows, top_k}, "out_top_scores") : nullptr;
        const hardmine::SampleRule rule{seed, temperature, first_row, first_id};
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] {
          hardmine::sample(q, c, count, scales, exclusion, bounds, tallies, rule, options, indices, scores,
                           priorities, top_k, top_indices, top_scores);
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("count"), py::arg("seed"), py::arg("temperature"), py::arg("first_row"), py::arg("first_id"),
      py::arg("query_scales"), py::arg("candidate_scales"), py::arg("exclude_indptr"),
      py::arg("exclude_indices"), py::arg("query_groups"), py::arg("candidate_groups"),
      py::arg("out_indices"), py::arg("out_scores"), py::arg("out_priorities"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0, py::arg("candidate_keys") = py::none(),
      py::arg("excluded_key_indptr") = py::none(), py::arg("excluded_key_indices") = py::none(),
      py::arg("upper_bounds") = py::none(), py::arg("lower_bounds") = py::none(),
      py::arg("exclusive_bounds") = false, py::arg("count_bounds") = std::vector<py::array>{},
      py::arg("count_below") = std::vector<bool>{}, py::arg("out_counts") = py::none(), py::arg("top_k") = 0,
      py::arg("out_top_indices") = py::none(), py::arg("out_top_scores") = py::none(),
      "Seeded draws without replacement over every admissible candidate. Use hardmine.mine instead.");

  m.def(
      "uniform_draw", &hardmine::uniform_draw, py::arg("seed"), py::arg("row"), py::arg("id"),
      "The core's seeded uniform (0, 1) draw, for the test suite (equals hardmine._draws.uniform).");

  m.def(
      "violations",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         const py::array& positive_scores, float margin, std::optional<py::array> query_scales,
         std::optional<py::array> candidate_scales, std::optional<py::array> exclude_indptr,
         std::optional<py::array> exclude_indices, std::optional<py::array> query_groups,
         std::optional<py::array> candidate_groups, py::array out_count, py::array out_hinge_sum,
         py::array out_max, py::array out_argmax, int64_t query_rows, int64_t candidate_rows,
         int num_threads, std::optional<py::array> out_best_scores) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        const float* positives =
            contiguous_input<float>(std::optional<py::array>(positive_scores), q.rows, "positive_scores");
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        const auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups,
                                            candidate_groups, q.rows, c.rows);
        int64_t* count = output<int64_t>(out_count, {q.rows}, "out_count");
        double* hinge_sum = output<double>(out_hinge_sum, {q.rows}, "out_hinge_sum");
        float* max_hinge = output<float>(out_max, {q.rows}, "out_max");
        int64_t* argmax = output<int64_t>(out_argmax, {q.rows}, "out_argmax");
        float* best_scores =
            out_best_scores ? output<float>(*out_best_scores, {q.rows}, "out_best_scores") : nullptr;
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] {
          hardmine::violations(q, c, positives, margin, scales, exclusion, options, count, hinge_sum,
                               max_hinge, argmax, best_scores);
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("positive_scores"), py::arg("margin"), py::arg("query_scales"),
      py::arg("candidate_scales"), py::arg("exclude_indptr"), py::arg("exclude_indices"),
      py::arg("query_groups"), py::arg("candidate_groups"), py::arg("out_count"),
      py::arg("out_hinge_sum"), py::arg("out_max"), py::arg("out_argmax"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0, py::arg("out_best_scores") = py::none(),
      "Blocked margin violations into preallocated outputs. Use hardmine.violations instead.");

  m.def(
      "similarity",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         py::array out, int64_t query_rows, int64_t candidate_rows, int num_threads) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        float* dense = output<float>(out, {q.rows, c.rows}, "out");
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] { hardmine::similarity(q, c, scales, options, dense); });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("query_scales"), py::arg("candidate_scales"), py::arg("out"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0,
      "Dense score matrix into a preallocated output. Use hardmine.similarity instead.");

  m.def(
      "block_sizes",
      [](int64_t queries, int64_t candidates, int64_t dim, int num_threads) {
        const auto blocks = hardmine::choose_block_sizes(
            queries, candidates, dim, num_threads > 0 ? num_threads : hardmine::max_threads(), {});
        return py::make_tuple(blocks.query_rows, blocks.candidate_rows);
      },
      py::arg("queries"), py::arg("candidates"), py::arg("dim"), py::arg("num_threads") = 0,
      "The (query_rows, candidate_rows) the core picks for a problem shape.");

  m.def(
      "worker_threads", [](int requested) { return hardmine::resolve_threads(requested); },
      py::arg("requested") = 0,
      "Threads a call would use: the request (0: every core), 1 in a child forked after a parallel region.");

  m.def(
      "_fail_in_block",
      [](int64_t num_blocks, int64_t failing_block, int num_threads) {
        py::gil_scoped_release release;
        hardmine::fail_in_block(num_blocks, failing_block, num_threads);
      },
      py::arg("num_blocks"), py::arg("failing_block"), py::arg("num_threads") = 0,
      "Test-suite diagnostic: a worker throws in one block; the error must reach the caller.");

  py::dict info;
  info["blas"] = hardmine::blas_info();
  info["openmp"] = hardmine::has_openmp();
  info["max_threads"] = hardmine::max_threads();
  info["simd"] = hardmine::simd_info();
  info["compiler"] = HARDMINE_COMPILER;
  info["cuda_built"] = HARDMINE_CUDA_BUILT != 0;
  info["cuda_reason"] = HARDMINE_CUDA_REASON;
  m.attr("BUILD_INFO") = info;
}
