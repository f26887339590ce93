// pybind11 glue for the CUDA core. Importable without a driver or device:
// device_count() then reports why nothing can run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "hardmine/build_info.hpp"
#include "hardmine/cuda.hpp"

namespace py = pybind11;

namespace {

// Device arrays travel as integer addresses (CuPy's `.data.ptr`); 0 is "absent".
template <class T>
T* address(uintptr_t value) {
  return reinterpret_cast<T*>(value);
}

hardmine::cuda::Selection as_selection(const py::tuple& t) {
  if (t.size() != 9) throw py::value_error("selection: 8 device addresses and the width");
  hardmine::cuda::Selection s;
  s.values = address<double>(t[0].cast<uintptr_t>());
  s.scores = address<float>(t[1].cast<uintptr_t>());
  s.ids = address<int64_t>(t[2].cast<uintptr_t>());
  s.keys = address<int64_t>(t[3].cast<uintptr_t>());
  s.counts = address<int64_t>(t[4].cast<uintptr_t>());
  s.thr_values = address<double>(t[5].cast<uintptr_t>());
  s.thr_scores = address<float>(t[6].cast<uintptr_t>());
  s.thr_ids = address<int64_t>(t[7].cast<uintptr_t>());
  s.width = t[8].cast<int64_t>();
  return s;
}

// (exclude indptr, indices, query groups, candidate groups, candidate keys, key indptr, key indices)
hardmine::Exclusion as_exclusion(const py::tuple& t) {
  if (t.size() != 7) throw py::value_error("exclusion: 7 device addresses");
  hardmine::Exclusion e;
  e.indptr = address<const int64_t>(t[0].cast<uintptr_t>());
  e.indices = address<const int64_t>(t[1].cast<uintptr_t>());
  e.query_groups = address<const int64_t>(t[2].cast<uintptr_t>());
  e.candidate_groups = address<const int64_t>(t[3].cast<uintptr_t>());
  e.candidate_keys = address<const int64_t>(t[4].cast<uintptr_t>());
  e.key_indptr = address<const int64_t>(t[5].cast<uintptr_t>());
  e.key_indices = address<const int64_t>(t[6].cast<uintptr_t>());
  return e;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "hardmine CUDA core";
  m.def(
      "device_count",
      [] {
        std::string reason;
        const int count = hardmine::cuda::device_count(&reason);
        return py::make_tuple(count, reason);
      },
      "(number of visible devices, reason when there are none)");
  m.def("runtime_version", &hardmine::cuda::runtime_version);
  m.def(
      "row_dot",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> a,
         py::array_t<float, py::array::c_style | py::array::forcecast> b) {
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(0) != b.shape(0) || a.shape(1) != b.shape(1)) {
          throw py::value_error("a and b must be 2-D arrays of the same shape");
        }
        py::array_t<float> out(a.shape(0));
        float* out_ptr = out.mutable_data();
        const float* a_ptr = a.data();
        const float* b_ptr = b.data();
        const int64_t rows = a.shape(0), dim = a.shape(1);
        {
          py::gil_scoped_release release;
          hardmine::cuda::row_dot(a_ptr, b_ptr, rows, dim, out_ptr);
        }
        return out;
      },
      py::arg("a"), py::arg("b"), "Row-wise dot products of two (n, d) arrays, on device 0.");
  m.def(
      "select_consume",
      [](uintptr_t tile, int64_t rows, int64_t cols, int64_t ld, int64_t q0, int64_t c0, int mode, uint64_t seed,
         double temperature, int64_t first_row, int64_t first_id, const py::tuple& selection,
         const py::tuple& exclusion, uintptr_t upper, uintptr_t lower, bool exclusive, uintptr_t stream) {
        const hardmine::SampleRule rule{seed, temperature, first_row, first_id};
        hardmine::ScoreBounds bounds;
        bounds.upper = address<const float>(upper);
        bounds.lower = address<const float>(lower);
        bounds.exclusive = exclusive;
        const auto sel = as_selection(selection);
        const auto excl = as_exclusion(exclusion);
        py::gil_scoped_release release;
        hardmine::cuda::select_consume(address<const float>(tile), rows, cols, ld, q0, c0, mode, rule, sel, excl,
                                       bounds, stream);
      },
      "Appends each row's admissible entries beating its threshold (device addresses). Use backend='cuda'.");
  m.def(
      "select_reduce",
      [](int64_t rows, int64_t k, bool final, const py::tuple& selection, bool has_keys, uintptr_t stream) {
        const auto sel = as_selection(selection);
        py::gil_scoped_release release;
        hardmine::cuda::select_reduce(rows, k, final, sel, has_keys, stream);
      },
      "Keeps each row's best k entries, sorted (device addresses). Use backend='cuda'.");
  m.def(
      "violations",
      [](uintptr_t tile, int64_t rows, int64_t cols, int64_t ld, int64_t q0, int64_t c0, uintptr_t positive_scores,
         float margin, uintptr_t counts, uintptr_t hinge_sums, uintptr_t best_scores, uintptr_t best_ids,
         const py::tuple& exclusion, uintptr_t stream) {
        const auto excl = as_exclusion(exclusion);
        py::gil_scoped_release release;
        hardmine::cuda::violations(address<const float>(tile), rows, cols, ld, q0, c0,
                                   address<const float>(positive_scores), margin, address<int64_t>(counts),
                                   address<double>(hinge_sums), address<float>(best_scores),
                                   address<int64_t>(best_ids), excl, stream);
      },
      "Adds a tile's violation statistics (device addresses). Use backend='cuda'.");
  m.attr("CUDA_ARCHITECTURES") = HARDMINE_CUDA_ARCHITECTURES;
}
