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

// 1 / sqrt(mean(x^2) + eps) given the sum of squares over n elements.
MS_HOST_DEVICE float RmsScale(float sum_squares, int n, float eps) {
  return 1.0f / sqrtf(sum_squares / static_cast<float>(n) + eps);
}

// One selective-scan step for channel state h[N]:
//   h = exp(dt*A) * h + (dt*x) * B;  returns y = h . C   (D*x and the gate are applied by the caller)
MS_HOST_DEVICE float ScanStep(float* h, const float* a, const float* b, const float* c, float dt,
                              float x, int n_state) {
  const float dt_x = dt * x;
  float y = 0.0f;
  for (int n = 0; n < n_state; ++n) {
    h[n] = expf(dt * a[n]) * h[n] + dt_x * b[n];
    y += h[n] * c[n];
  }
  return y;
}

// Causal depthwise conv output for one channel: window[k] is the input at time t-K+1+k
// (window[K-1] is the current token), then SiLU.
MS_HOST_DEVICE float ConvSilu(const float* window, const float* weight, float bias, int k_conv) {
  float acc = bias;
  for (int k = 0; k < k_conv; ++k) acc += weight[k] * window[k];
  return Silu(acc);
}

}  // namespace mambaserve::math
