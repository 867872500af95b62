// The cuBLAS entry points CudaBackend calls, on the emulated device: a plain GEMM with fp64
// accumulation that checks every operand lies inside device memory (a wrong leading dimension or
// row count shows up here as an error, where real cuBLAS would read or write out of bounds).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/cuda_emulator/emulated_device.h"

namespace emu = mambaserve::cuda_emulator;

struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

namespace {

int ElementSize(cudaDataType type) {
  switch (type) {
    case CUDA_R_32F:
      return 4;
    case CUDA_R_16BF:
    case CUDA_R_16F:
      return 2;
    default:
      return 0;
  }
}

float Load(const void* base, cudaDataType type, int64_t index) {
  switch (type) {
    case CUDA_R_32F:
      return static_cast<const float*>(base)[index];
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
    default:
      return __half2float(static_cast<const __half*>(base)[index]);
  }
}

void Store(void* base, cudaDataType type, int64_t index, float value) {
  switch (type) {
    case CUDA_R_32F:
      static_cast<float*>(base)[index] = value;
      break;
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(value);
      break;
    default:
      static_cast<__half*>(base)[index] = __float2half_rn(value);
      break;
  }
}

// A column-major rows x cols matrix with leading dimension ld spans (cols-1)*ld + rows elements.
bool CoversDeviceMatrix(const void* base, cudaDataType type, int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return true;
  const size_t elements = static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) + rows;
  return emu::IsDeviceRange(base, elements * ElementSize(type));
}

cublasStatus_t Refuse(const std::string& what) {
  emu::Complain("cublasGemmEx: " + what);
  return CUBLAS_STATUS_INVALID_VALUE;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes != 0 && !emu::IsDeviceRange(workspace, bytes)) {
    emu::Complain("cublasSetWorkspace: the workspace is not device memory");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

// C = alpha * op(A) * op(B) + beta * C, column-major, op(A) m x k, op(B) k x n. Host scalars
// (the default pointer mode) are read now, as cuBLAS does; the product runs on the handle's
// stream, so it is recorded when that stream is being captured.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType a_type, int lda, const void* B,
                            cudaDataType b_type, int ldb, const void* beta, void* C,
                            cudaDataType c_type, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0) return Refuse("negative dimension");
  if (ElementSize(a_type) == 0 || ElementSize(b_type) == 0 || ElementSize(c_type) == 0)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC &&
      compute != CUBLAS_COMPUTE_32F_FAST_TF32 && compute != CUBLAS_COMPUTE_32F_FAST_16BF) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  // Stored shapes: A is m x k (or k x m transposed), B is k x n (or n x k).
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m))
    return Refuse("leading dimension smaller than the rows it holds");
  if (!CoversDeviceMatrix(A, a_type, a_rows, a_cols, lda))
    return Refuse("A (" + std::to_string(a_rows) + " x " + std::to_string(a_cols) + ", lda " +
                  std::to_string(lda) + ") is not inside one device allocation");
  if (!CoversDeviceMatrix(B, b_type, b_rows, b_cols, ldb))
    return Refuse("B (" + std::to_string(b_rows) + " x " + std::to_string(b_cols) + ", ldb " +
                  std::to_string(ldb) + ") is not inside one device allocation");
  if (!CoversDeviceMatrix(C, c_type, m, n, ldc))
    return Refuse("C (" + std::to_string(m) + " x " + std::to_string(n) + ", ldc " +
                  std::to_string(ldc) + ") is not inside one device allocation");
  const float alpha_value = *static_cast<const float*>(alpha);
  const float beta_value = *static_cast<const float*>(beta);
  emu::Enqueue(handle->stream, [=] {
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        double acc = 0.0;
        for (int l = 0; l < k; ++l) {
          const int64_t a_index =
              ta ? static_cast<int64_t>(i) * lda + l : static_cast<int64_t>(l) * lda + i;
          const int64_t b_index =
              tb ? static_cast<int64_t>(l) * ldb + j : static_cast<int64_t>(j) * ldb + l;
          acc += static_cast<double>(Load(A, a_type, a_index)) * Load(B, b_type, b_index);
        }
        const int64_t c_index = static_cast<int64_t>(j) * ldc + i;
        // beta == 0 ignores C entirely (it may hold NaN), as BLAS specifies.
        const double prior = beta_value == 0.0f ? 0.0 : beta_value * Load(C, c_type, c_index);
        Store(C, c_type, c_index, static_cast<float>(alpha_value * acc + prior));
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
  }
}

const char* cublasGetStatusString(cublasStatus_t status) { return cublasGetStatusName(status); }

}  // extern "C"
