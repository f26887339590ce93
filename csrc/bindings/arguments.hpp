// Python arguments -> the core's views, with the checks that keep a direct caller of the
// bindings from crashing the process; GIL release and Ctrl-C polling. Used by core_module.cpp only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "hardmine/engine.hpp"
#include "hardmine/tiling.hpp"

namespace py = pybind11;
using hardmine::DType;
using hardmine::MatrixView;

namespace hardmine_bindings {
namespace {  // one translation unit (core_module.cpp) includes this

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
}  // namespace hardmine_bindings
