#include "kernels/causal_conv1d.h"
#include "kernels/conv_update.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"

namespace mambaserve::kernels {
namespace {

using math::kMaxConvWidth;

// Prefill: a block owns 32 channels of one chunk and walks it in tiles of kTileTokens tokens.
// Every thread first loads its share of the tile (kTileTokens / kSlices inputs, all issued before
// the first is used: a thread with one load in flight at a time leaves a long prompt waiting on
// memory latency), into shared memory rows that follow the K - 1 inputs before the tile; then
// threadIdx.y's slice of consecutive tokens is computed from there with the window sliding through
// registers. threadIdx.x is the channel, so every global load and store is one 128-byte row per
// token. The state is read once before the first tile and written after the last.
constexpr int kChannels = 32;
constexpr int kSlices = 8;
constexpr int kTileTokens = 128;
constexpr int kSliceTokens = kTileTokens / kSlices;
constexpr int kHistory = kMaxConvWidth - 1;  // rows for the K - 1 inputs before the tile

template <typename T>
__global__ void __launch_bounds__(kChannels* kSlices)
    CausalConv1dPrefillKernel(CausalConv1dParams p) {
  WaitForPreviousKernel();
  // Row kHistory + i: the tile's input i (bias added); rows kHistory - (K-1) .. kHistory - 1:
  // the K - 1 inputs before it.
  __shared__ float inputs[kHistory + kTileTokens][kChannels];
  const int c = threadIdx.x, slice = threadIdx.y;
  const int chunk = blockIdx.y;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kChannels + c;
  const int64_t row0 = p.chunks.row_begin[chunk];
  const int64_t len = p.chunks.len[chunk];
  const int slot = p.chunks.slot[chunk];
  const bool has_state = slot >= 0 && p.chunks.fresh[chunk] == 0;
  const int K = p.k_conv;
  const bool active = ch < p.d_inner;
  float* state = active && slot >= 0 ? p.conv_state + slot * p.slot_stride + ch * (K - 1) : nullptr;
  const float xb = active && p.x_bias != nullptr ? p.x_bias[ch] : 0.0f;
  float w[kMaxConvWidth];
  const float w_last = active ? LoadConvTaps(p, ch, w) : 0.0f;
  const float bias = active && p.bias != nullptr ? p.bias[ch] : 0.0f;

  if (slice == 0) {
    for (int j = 0; j < K - 1; ++j)
      inputs[kHistory - (K - 1) + j][c] = has_state && state != nullptr ? state[j] : 0.0f;
  }
  for (int64_t tile0 = 0; tile0 < len; tile0 += kTileTokens) {
    const int n = len - tile0 < kTileTokens ? static_cast<int>(len - tile0) : kTileTokens;
    float loaded[kSliceTokens];
#pragma unroll
    for (int j = 0; j < kSliceTokens; ++j) {
      const int i = slice + j * kSlices;
      loaded[j] = active && i < n ? p.x[(row0 + tile0 + i) * p.ld_x + ch] + xb : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kSliceTokens; ++j) inputs[kHistory + slice + j * kSlices][c] = loaded[j];
    __syncthreads();

    const int i0 = slice * kSliceTokens;
    if (active && i0 < n) {
      float saved[kMaxConvWidth];  // the K - 1 inputs before token i0 (and a spare, zero)
#pragma unroll
      for (int k = 0; k < kMaxConvWidth; ++k)
        saved[k] = k < K - 1 ? inputs[kHistory + i0 - (K - 1) + k][c] : 0.0f;
#pragma unroll
      for (int j = 0; j < kSliceTokens; ++j) {
        const int i = i0 + j;
        if (i >= n) break;
        const float x = inputs[kHistory + i][c];
        const float v = ConvSiluOutput(w, w_last, bias, saved, x, K);
        const int64_t r = row0 + tile0 + i;
        p.out[r * p.ld_out + ch] = v;
        if (p.out_gemm != nullptr)
          static_cast<T*>(p.out_gemm)[r * p.ld_out_gemm + ch] = FromF32<T>(v);
        ShiftIn(saved, x, K);
      }
    }
    __syncthreads();
    // The last K - 1 inputs so far become the rows before the next tile (ascending j reads rows
    // at or after the one it writes, so nothing is overwritten before it is read).
    if (slice == 0) {
      for (int j = 0; j < K - 1; ++j)
        inputs[kHistory - (K - 1) + j][c] = inputs[kHistory + n - (K - 1) + j][c];
    }
    __syncthreads();
  }
  if (slice == 0 && state != nullptr) {
    for (int j = 0; j < K - 1; ++j) state[j] = inputs[kHistory - (K - 1) + j][c];
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
