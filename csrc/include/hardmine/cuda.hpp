// Host-side entry points of the CUDA core. Plain C++: the bindings include this
// without the CUDA toolkit headers.
#pragma once

#include <cstdint>
#include <string>

namespace hardmine::cuda {

/// Number of visible CUDA devices; 0 when there is no driver or device.
/// @param[out] reason  why no device is usable, empty otherwise
int device_count(std::string* reason);

/// CUDA runtime version the module was built against, e.g. 13000.
int runtime_version();

/// out[i] = dot(a row i, b row i) for two host (n, d) fp32 row-major matrices,
/// computed on device 0. Throws std::runtime_error with the CUDA message on failure.
void row_dot(const float* a, const float* b, int64_t rows, int64_t dim, float* out);

}  // namespace hardmine::cuda
