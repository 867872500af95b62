#include "engine/backend/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace mambaserve::cuda {

absl::Status CudaStatus(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::Status CublasStatus(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", cublasGetStatusName(status), " (",
                                           cublasGetStatusString(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    // Clear the (non-sticky) error so later runtime calls do not report it again.
    cudaGetLastError();
    std::string hint;
    if (error == cudaErrorInsufficientDriver)
      hint = " (no NVIDIA driver is loaded, or it is older than this CUDA runtime)";
    if (error == cudaErrorNoDevice) hint = " (the driver sees no GPU)";
    return absl::FailedPreconditionError(
        absl::StrCat("no usable CUDA device: cudaGetDeviceCount failed with ",
                     cudaGetErrorName(error), ": ", cudaGetErrorString(error), hint));
  }
  if (count == 0)
    return absl::FailedPreconditionError("no usable CUDA device: the driver reports 0 GPUs");
  return count;
}

}  // namespace mambaserve::cuda
