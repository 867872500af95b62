#include "kernels/causal_conv1d.h"
#include "kernels/conv_update.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"

namespace mambaserve::kernels {
namespace {

using math::kMaxConvWidth;

// Prefill: a block owns 32 channels of one chunk for the whole chunk. threadIdx.x is the channel
// (32 consecutive floats: one 128-byte transaction per token), threadIdx.y one of kSlices time
// slices, so a long chunk is split 8 ways without a second pass; the state is written after a
// barrier, once every slice has read the old one.
constexpr int kChannels = 32;
constexpr int kSlices = 8;

template <typename T>
__global__ void CausalConv1dPrefillKernel(CausalConv1dParams p) {
  WaitForPreviousKernel();
  const int chunk = blockIdx.y;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const int64_t row0 = p.chunks.row_begin[chunk];
  const int64_t len = p.chunks.len[chunk];
  const int slot = p.chunks.slot[chunk];
  const bool has_state = slot >= 0 && p.chunks.fresh[chunk] == 0;
  const int K = p.k_conv;
  const bool active = ch < p.d_inner;
  float* state = active && slot >= 0 ? p.conv_state + slot * p.slot_stride + ch * (K - 1) : nullptr;
  const float xb = active && p.x_bias != nullptr ? p.x_bias[ch] : 0.0f;

  // Input at time t of this chunk (t < 0: from the state).
  auto input = [&](int64_t t) -> float {
    if (t >= 0) return p.x[(row0 + t) * p.ld_x + ch] + xb;
    return has_state ? state[t + K - 1] : 0.0f;
  };

  if (active) {
    float w[kMaxConvWidth];
    const float w_last = LoadConvTaps(p, ch, w);
    const float bias = p.bias != nullptr ? p.bias[ch] : 0.0f;
    const int64_t per_slice = (len + kSlices - 1) / kSlices;
    const int64_t t0 = threadIdx.y * per_slice;
    const int64_t t1 = min(len, t0 + per_slice);
    if (t0 < t1) {
      float saved[kMaxConvWidth];  // the K - 1 inputs before t, in registers (and a spare, zero)
#pragma unroll
      for (int k = 0; k < kMaxConvWidth; ++k) {
        saved[k] = k < K - 1 ? input(t0 - (K - 1) + k) : 0.0f;
      }
      for (int64_t t = t0; t < t1; ++t) {
        const float x = input(t);
        const float v = ConvSiluOutput(w, w_last, bias, saved, x, K);
        p.out[(row0 + t) * p.ld_out + ch] = v;
        if (p.out_gemm != nullptr) {
          static_cast<T*>(p.out_gemm)[(row0 + t) * p.ld_out_gemm + ch] = FromF32<T>(v);
        }
        ShiftIn(saved, x, K);
      }
    }
  }
  __syncthreads();
  if (active && threadIdx.y == 0 && slot >= 0) {
    // New state: inputs at times len-K+1 .. len-1. Ascending j reads old entries j+len > j, which
    // are not yet overwritten.
    for (int j = 0; j < K - 1; ++j) state[j] = input(len - (K - 1) + j);
  }
}

template <typename T>
__global__ void __launch_bounds__(kConvUpdateThreads)
    CausalConv1dUpdateKernel(CausalConv1dParams p) {
  WaitForPreviousKernel();
  const int row = blockIdx.y;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= p.d_inner) return;
  ConvUpdate<T>(p, row, ch, p.x[row * p.ld_x + ch]);
}

}  // namespace

LaunchResult InvokeCausalConv1dPrefill(const CausalConv1dParams& p, cudaStream_t stream) {
  if (p.chunks.num_chunks == 0) return 0;
  if (p.k_conv < 2 || p.k_conv > kMaxConvWidth)
    return static_cast<LaunchResult>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned>((p.d_inner + kChannels - 1) / kChannels),
                  static_cast<unsigned>(p.chunks.num_chunks));
  const dim3 block(kChannels, kSlices);
  MS_DISPATCH_GEMM_TYPE(p.out_gemm_type, T, [&] {
    LaunchKernel(CausalConv1dPrefillKernel<T>, grid, block, stream, p);
  });
  return LastLaunchResult();
}

LaunchResult InvokeCausalConv1dUpdate(const CausalConv1dParams& p, cudaStream_t stream) {
  if (p.chunks.num_chunks == 0) return 0;
  if (p.k_conv < 2 || p.k_conv > kMaxConvWidth)
    return static_cast<LaunchResult>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned>((p.d_inner + kConvUpdateThreads - 1) / kConvUpdateThreads),
                  static_cast<unsigned>(p.chunks.num_chunks));
  MS_DISPATCH_GEMM_TYPE(p.out_gemm_type, T, [&] {
    LaunchKernel(CausalConv1dUpdateKernel<T>, grid, kConvUpdateThreads, stream, p);
  });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
