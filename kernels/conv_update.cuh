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

// One channel's K taps into w (zero past K); returns the last, w[K-1], the tap on the current
// input. Loops here run to math::kMaxConvWidth with K as a predicate, so callers keep every value
// in registers (loops to a run-time K put them in local memory).
__device__ __forceinline__ float LoadConvTaps(const CausalConv1dParams& p, int64_t ch,
                                              float (&w)[math::kMaxConvWidth]) {
  const int K = p.k_conv;
  const float* __restrict__ weight = p.weight + ch * K;
#pragma unroll
  for (int k = 0; k < math::kMaxConvWidth; ++k) w[k] = k < K ? weight[k] : 0.0f;
  float w_last = 0.0f;
#pragma unroll
  for (int k = 0; k < math::kMaxConvWidth; ++k) w_last = k == K - 1 ? w[k] : w_last;
  return w_last;
}

// SiLU(bias + sum_k w[k] * saved[k] + w[K-1] * x): math::ConvSilu's sum, term by term in the same
// order. saved[k], k < K - 1, are the previous inputs, oldest first.
__device__ __forceinline__ float ConvSiluOutput(const float (&w)[math::kMaxConvWidth], float w_last,
                                                float bias,
                                                const float (&saved)[math::kMaxConvWidth], float x,
                                                int K) {
  float acc = bias;
#pragma unroll
  for (int k = 0; k < math::kMaxConvWidth - 1; ++k) {
    if (k < K - 1) acc += w[k] * saved[k];
  }
  acc += w_last * x;
  return math::Silu(acc);
}

// saved <- the last K - 1 inputs once x has joined them.
__device__ __forceinline__ void ShiftIn(float (&saved)[math::kMaxConvWidth], float x, int K) {
#pragma unroll
  for (int k = 0; k < math::kMaxConvWidth - 1; ++k) {
    if (k < K - 1) saved[k] = k + 1 < K - 1 ? saved[k + 1] : x;
  }
}

// `x_in` is the channel's new pre-conv input (in_proj's output, before its bias). Reads the
// channel's K-1 saved inputs and its K weights before any store, then writes the conv output
// (fp32, and the GEMM copy in T when asked) and shifts the saved inputs. A padding row (slot -1)
// reads and writes no state.
template <typename T>
__device__ __forceinline__ void ConvUpdate(const CausalConv1dParams& p, int row, int64_t ch,
                                           float x_in) {
  const int slot = p.chunks.slot[row];
  const bool has_state = slot >= 0 && p.chunks.fresh[row] == 0;
  const int K = p.k_conv;
  float* __restrict__ state =
      slot >= 0 ? p.conv_state + slot * p.slot_stride + ch * (K - 1) : nullptr;
  float saved[math::kMaxConvWidth];  // the K - 1 saved inputs (and a spare, zero)
#pragma unroll
  for (int k = 0; k < math::kMaxConvWidth; ++k) {
    saved[k] = k < K - 1 && has_state ? state[k] : 0.0f;
  }
  float w[math::kMaxConvWidth];
  const float w_last = LoadConvTaps(p, ch, w);
  const float bias = p.bias != nullptr ? p.bias[ch] : 0.0f;
  const float x = x_in + (p.x_bias != nullptr ? p.x_bias[ch] : 0.0f);
  const float v = ConvSiluOutput(w, w_last, bias, saved, x, K);
  p.out[row * p.ld_out + ch] = v;
  if (p.out_gemm != nullptr) static_cast<T*>(p.out_gemm)[row * p.ld_out_gemm + ch] = FromF32<T>(v);
  if (state != nullptr) {
    ShiftIn(saved, x, K);
#pragma unroll
    for (int k = 0; k < math::kMaxConvWidth - 1; ++k) {
      if (k < K - 1) state[k] = saved[k];
    }
  }
}

}  // namespace mambaserve::kernels
