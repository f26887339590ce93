// The first CUDA kernel: row-wise dot products. It proves the toolchain path
// (nvcc, architectures, runtime linking, error translation) end to end; the
// score-tile and selection kernels build on the same plumbing.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "hardmine/cuda.hpp"

namespace hardmine::cuda {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

// One warp per row; lanes stride over the dimension, then a shuffle reduction.
__global__ void row_dot_kernel(const float* a, const float* b, int64_t rows, int64_t dim, float* out) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float sum = 0.0f;
  for (int64_t j = lane; j < dim; j += 32) sum += a[row * dim + j] * b[row * dim + j];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) out[row] = sum;
}

// Frees device memory on every exit path, including exceptions.
struct DeviceBuffer {
  float* ptr = nullptr;
  explicit DeviceBuffer(size_t count) {
    if (count > 0) check(cudaMalloc(&ptr, count * sizeof(float)), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

int device_count(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (reason) *reason = cudaGetErrorString(status);
    cudaGetLastError();  // non-sticky: clear it so later runtime calls start clean
    return 0;
  }
  if (count == 0 && reason) *reason = "no CUDA device visible";
  return count;
}

int runtime_version() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version;
}

void row_dot(const float* a, const float* b, int64_t rows, int64_t dim, float* out) {
  if (rows == 0) return;
  const size_t elements = static_cast<size_t>(rows * dim);
  DeviceBuffer da(elements), db(elements), dout(static_cast<size_t>(rows));
  check(cudaMemcpy(da.ptr, a, elements * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(db.ptr, b, elements * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  const int threads = 256;
  const int64_t blocks = (rows * 32 + threads - 1) / threads;
  row_dot_kernel<<<static_cast<unsigned>(blocks), threads>>>(da.ptr, db.ptr, rows, dim, dout.ptr);
  check(cudaGetLastError(), "row_dot_kernel launch");
  check(cudaMemcpy(out, dout.ptr, static_cast<size_t>(rows) * sizeof(float), cudaMemcpyDeviceToHost),
        "cudaMemcpy");
}

}  // namespace hardmine::cuda
