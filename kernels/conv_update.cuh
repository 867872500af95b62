// The decode step of the causal conv for one (row, channel), shared by the conv's own update kernel
// and the skinny GEMM, which runs it on in_proj's output as it writes it (one launch fewer per
// layer at small batches). nvcc only.
#pragma once

#include "kernels/causal_conv1d.h"
#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"

namespace mambaserve::kernels {

// 128 channels per block: enough blocks for a batch-1 step of a small model to spread over SMs.
constexpr int kConvUpdateThreads = 128;

// `x_in` is the channel's new pre-conv input (in_proj's output, before its bias). Reads the
// channel's K-1 saved inputs and its K weights before any store, then writes the conv output
// (fp32, and the GEMM copy in T when asked) and shifts the saved inputs. A padding row (slot -1)
// reads and writes no state. Loops run to math::kMaxConvWidth with K as a predicate, so every
// value stays in a register (a loop to a run-time K put them in local memory); the sum is
// math::ConvSilu's, term by term in the same order.
template <typename T>
__device__ __forceinline__ void ConvUpdate(const CausalConv1dParams& p, int row, int64_t ch,
                                           float x_in) {
  constexpr int kMax = math::kMaxConvWidth;
  const int slot = p.chunks.slot[row];
  const bool has_state = slot >= 0 && p.chunks.fresh[row] == 0;
  const int K = p.k_conv;
  float* __restrict__ state =
      slot >= 0 ? p.conv_state + slot * p.slot_stride + ch * (K - 1) : nullptr;
  const float* __restrict__ weight = p.weight + ch * K;
  float saved[kMax - 1], w[kMax];
#pragma unroll
  for (int k = 0; k < kMax - 1; ++k) saved[k] = k < K - 1 && has_state ? state[k] : 0.0f;
#pragma unroll
  for (int k = 0; k < kMax; ++k) w[k] = k < K ? weight[k] : 0.0f;
  const float x = x_in + (p.x_bias != nullptr ? p.x_bias[ch] : 0.0f);
  float acc = p.bias != nullptr ? p.bias[ch] : 0.0f;
#pragma unroll
  for (int k = 0; k < kMax - 1; ++k) {
    if (k < K - 1) acc += w[k] * saved[k];
  }
  float w_last = 0.0f;  // w[K - 1], picked without indexing by K
#pragma unroll
  for (int k = 0; k < kMax; ++k) w_last = k == K - 1 ? w[k] : w_last;
  acc += w_last * x;
  const float v = math::Silu(acc);
  p.out[row * p.ld_out + ch] = v;
  if (p.out_gemm != nullptr) static_cast<T*>(p.out_gemm)[row * p.ld_out_gemm + ch] = FromF32<T>(v);
  if (state != nullptr) {
#pragma unroll
    for (int k = 0; k < kMax - 1; ++k) {
      if (k < K - 1) state[k] = k + 1 < K - 1 ? saved[k + 1] : x;
    }
  }
}

}  // namespace mambaserve::kernels
