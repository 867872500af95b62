// Helpers for tests that need a GPU: skip cleanly without one, and RAII device buffers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "engine/backend/cuda/cuda_status.h"
#include "gtest/gtest.h"

// Skips the current test, with the reason, when no CUDA device is usable (no driver, no GPU).
#define MS_SKIP_WITHOUT_CUDA()                                             \
  do {                                                                     \
    auto ms_devices_ = ::mambaserve::cuda::CudaDeviceCount();              \
    if (!ms_devices_.ok()) GTEST_SKIP() << ms_devices_.status().message(); \
  } while (0)

namespace mambaserve::testing {

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(1, n) * sizeof(T)),
              cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr_, 0, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  void Upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    ASSERT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

 private:
  size_t n_;
  T* ptr_ = nullptr;
};

}  // namespace mambaserve::testing
