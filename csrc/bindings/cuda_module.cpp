// pybind11 glue for the CUDA core. Importable without a driver or device:
// device_count() then reports why nothing can run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "hardmine/build_info.hpp"
#include "hardmine/cuda.hpp"

namespace py = pybind11;

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
  m.attr("CUDA_ARCHITECTURES") = HARDMINE_CUDA_ARCHITECTURES;
}
