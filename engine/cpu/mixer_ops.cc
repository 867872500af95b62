#include "engine/cpu/mixer_ops.h"

#include <cstring>
#include <vector>

#include "kernels/mamba_math.h"

namespace mambaserve::cpu {

void RmsNormRows(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t rows,
                 int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    float sum_squares = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_squares += xr[i] * xr[i];
    const float scale = math::RmsScale(sum_squares, static_cast<int>(dim), eps);
    if (w != nullptr) {
      for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * scale * w[i];
    } else {
      for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * scale;
    }
  }
}

void CausalConv1dSilu(const float* x, int64_t ldx, int64_t len, const float* weight,
                      const float* bias, int64_t k_conv, float* state, float* out, int64_t ldo,
                      int64_t c_begin, int64_t c_end) {
  std::vector<float> window(k_conv);  // window[k]: input at t-K+1+k
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    float* st = state + ch * (k_conv - 1);
    std::memcpy(window.data(), st, (k_conv - 1) * sizeof(float));
    const float* w = weight + ch * k_conv;
    const float b = bias != nullptr ? bias[ch] : 0.0f;
    for (int64_t t = 0; t < len; ++t) {
      window[k_conv - 1] = x[t * ldx + ch];
      out[t * ldo + ch] = math::ConvSilu(window.data(), w, b, static_cast<int>(k_conv));
      std::memmove(window.data(), window.data() + 1, (k_conv - 1) * sizeof(float));
    }
    std::memcpy(st, window.data(), (k_conv - 1) * sizeof(float));
  }
}

void SelectiveScan(const float* x, const float* dt, const float* b, const float* c, int64_t ld_bc,
                   const float* a, const float* d, const float* z, int64_t ldz, int64_t len,
                   int64_t d_inner, int64_t d_state, float* state, float* y, int64_t c_begin,
                   int64_t c_end) {
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    float* h = state + ch * d_state;
    const float* a_row = a + ch * d_state;
    for (int64_t t = 0; t < len; ++t) {
      const float xv = x[t * d_inner + ch];
      const float yv = math::ScanStep(h, a_row, b + t * ld_bc, c + t * ld_bc, dt[t * d_inner + ch], xv,
                                      static_cast<int>(d_state));
      y[t * d_inner + ch] = (yv + d[ch] * xv) * math::Silu(z[t * ldz + ch]);
    }
  }
}

}  // namespace mambaserve::cpu
