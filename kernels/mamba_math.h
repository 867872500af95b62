// Per-element math of the Mamba forward pass, shared by the CPU backend and the CUDA kernels so
// both compute the same expressions. Compiles as plain C++ (no nvcc needed).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define MS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MS_HOST_DEVICE inline
#endif

namespace mambaserve::math {

// torch.nn.functional.softplus with threshold 20: exact log1p(exp(x)) below, identity above.
MS_HOST_DEVICE float Softplus(float x) { return x <= 20.0f ? log1pf(expf(x)) : x; }

MS_HOST_DEVICE float Silu(float x) { return x / (1.0f + expf(-x)); }

// dt = softplus(dt_proj(dt_low) + dt_proj.bias), in fp32 and never clamped.
MS_HOST_DEVICE float DtSoftplus(float dt_raw, float dt_bias) { return Softplus(dt_raw + dt_bias); }

// 1 / sqrt(mean(x^2) + eps) given the sum of squares over n elements.
MS_HOST_DEVICE float RmsScale(float sum_squares, int n, float eps) {
  return 1.0f / sqrtf(sum_squares / static_cast<float>(n) + eps);
}

// One state element's update: h = exp(dt*a) * h + (dt*x) * b, given dt_x = dt*x.
MS_HOST_DEVICE float ScanStateStep(float h, float a, float b, float dt, float dt_x) {
  return expf(dt * a) * h + dt_x * b;
}

// The mixer output for one channel and token: (h.C + D*x) * silu(z).
MS_HOST_DEVICE float GatedOutput(float y_state, float d, float x, float z) {
  return (y_state + d * x) * Silu(z);
}

// Causal depthwise conv output for one channel: window[k] is the input at time t-K+1+k
// (window[K-1] is the current token), then SiLU.
MS_HOST_DEVICE float ConvSilu(const float* window, const float* weight, float bias, int k_conv) {
  float acc = bias;
  for (int k = 0; k < k_conv; ++k) acc += weight[k] * window[k];
  return Silu(acc);
}

// What a greedy pick reports for a logits row holding a NaN or an infinity: no token is
// meaningful there (a corrupt state, or weights that drive the model out of float range).
inline constexpr int kNonFiniteRow = -1;

MS_HOST_DEVICE bool IsFinite(float value) {
  // x - x is 0 for every finite x, and NaN for an infinity or a NaN.
  return value - value == 0.0f;
}

// Greedy decoding's order on (logit, token id): a number beats NaN, a larger logit beats a smaller
// one, and ties go to the lower id. Any reduction order (a sequential scan or a GPU tree) under
// this order picks the same token.
MS_HOST_DEVICE bool ArgMaxPrefers(float value, int index, float best_value, int best_index) {
  const bool is_number = value == value, best_is_number = best_value == best_value;
  if (is_number != best_is_number) return is_number;
  if (is_number && value != best_value) return value > best_value;
  return index < best_index;
}

// Widest conv kernel the CUDA kernels keep in registers (Mamba uses 4).
inline constexpr int kMaxConvWidth = 8;
// Largest d_state the CUDA scan maps onto one warp's lanes (Mamba uses 16).
inline constexpr int kMaxStateSize = 32;

}  // namespace mambaserve::math
