// CUDA runtime / cuBLAS errors as absl::Status, and the "is there a usable GPU" probe.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mambaserve::cuda {

// OK for cudaSuccess; otherwise an error naming `what` and the CUDA error. Out-of-memory maps to
// RESOURCE_EXHAUSTED, everything else to INTERNAL.
absl::Status CudaStatus(cudaError_t error, const std::string& what);
absl::Status CublasStatus(cublasStatus_t status, const std::string& what);
// A kernel launcher's result (kernels::LaunchResult).
inline absl::Status LaunchStatus(int result, const char* kernel) {
  return CudaStatus(static_cast<cudaError_t>(result), std::string("launch of ") + kernel);
}

// The number of CUDA devices, or FAILED_PRECONDITION saying why none can be used (no driver,
// driver too old for this runtime, no device). Never crashes on a machine without a GPU.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace mambaserve::cuda

#define MS_CUDA_RETURN_IF_ERROR(expr, what)                                          \
  do {                                                                               \
    ::absl::Status ms_cuda_status_ = ::mambaserve::cuda::CudaStatus((expr), (what)); \
    if (!ms_cuda_status_.ok()) return ms_cuda_status_;                               \
  } while (0)
