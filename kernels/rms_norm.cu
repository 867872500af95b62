#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"
#include "kernels/rms_norm.h"

namespace mambaserve::kernels {
namespace {

// Values a thread keeps in registers between the sum of squares and the write: dim <= 8 * 1024
// covers every Mamba hidden size (Falcon-Mamba-7B: 4096) without re-reading the row.
constexpr int kThreads = 512;
constexpr int kMaxPerThread = 16;

template <typename T>
__global__ void ResidualRmsNormKernel(ResidualRmsNormParams p) {
  WaitForPreviousKernel();
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x;
  if (p.out_rows_device != nullptr && i >= *p.out_rows_device) return;
  const int64_t src = p.row_index != nullptr ? p.row_index[i] : i;
  float* res = p.residual + src * p.dim;
  const float* delta = p.delta != nullptr ? p.delta + src * p.dim : nullptr;
  const bool write_back = p.row_index == nullptr && delta != nullptr;

  float v[kMaxPerThread];
  float sum_squares = 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxPerThread; ++k) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    v[k] = 0.0f;
    if (j < p.dim) {
      float x = res[j];
      if (delta != nullptr) {
        // residual + (delta + bias): the CPU backend's order of additions.
        x += p.delta_bias != nullptr ? delta[j] + p.delta_bias[j] : delta[j];
        if (write_back) res[j] = x;
      }
      v[k] = x;
      sum_squares += x * x;
    }
  }
  sum_squares = BlockSum(sum_squares, scratch);
  const float scale = math::RmsScale(sum_squares, static_cast<int>(p.dim), p.eps);
  T* out = static_cast<T*>(p.out) + i * p.dim;
#pragma unroll
  for (int k = 0; k < kMaxPerThread; ++k) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (j < p.dim) out[j] = FromF32<T>(v[k] * scale * p.weight[j]);
  }
}

}  // namespace

LaunchResult InvokeResidualRmsNorm(const ResidualRmsNormParams& p, cudaStream_t stream) {
  if (p.out_rows == 0) return 0;
  if (p.dim > static_cast<int64_t>(kThreads) * kMaxPerThread) {
    return static_cast<LaunchResult>(cudaErrorInvalidValue);
  }
  // One block per row: the row's sum of squares is a block reduction, and a decode step's few rows
  // are latency-bound anyway.
  MS_DISPATCH_GEMM_TYPE(p.out_type, T, [&] {
    LaunchKernel(ResidualRmsNormKernel<T>, static_cast<unsigned>(p.out_rows), kThreads, stream, p);
  });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
