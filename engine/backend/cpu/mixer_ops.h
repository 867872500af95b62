// The CPU twins of the mixer's per-sequence ops. Each works on one sequence chunk of a packed pass
// and on a channel range [c_begin, c_end) so callers can split channels across threads. The
// per-element math comes from kernels/mamba_math.h, shared with the CUDA kernels.
#pragma once

#include <cstdint>

namespace mambaserve::cpu {

// y[r][dim] = x[r][dim] * rsqrt(mean(x[r]^2) + eps) * w (w == nullptr: weightless). Rows are
// strided by ldx / ldy so sub-blocks of a wider matrix can be normalised in place.
void RmsNormRows(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t rows,
                 int64_t dim, float eps);

// Causal depthwise conv + SiLU over `len` tokens for channels [c_begin, c_end).
//   x:      [len][ldx]   pre-conv inputs (channel c at column c)
//   weight: [E][K], bias: [E] or nullptr
//   state:  [E][K-1]     last K-1 inputs before this chunk; updated to the last K-1 after it
//   out:    [len][ldo]
void CausalConv1dSilu(const float* x, int64_t ldx, int64_t len, const float* weight,
                      const float* bias, int64_t k_conv, float* state, float* out, int64_t ldo,
                      int64_t c_begin, int64_t c_end);

// Selective scan over `len` tokens for channels [c_begin, c_end), then the D skip and the SiLU(z)
// gate:  h = exp(dt*A) h + dt*x*B;  y = (h.C + D*x) * silu(z).
//   x, dt: [len][E]; b, c: [len][ld_bc] (N values each); a: [E][N]; d: [E]; z: [len][ldz]
//   state: [E][N] fp32, updated in place;  y: [len][E]
void SelectiveScan(const float* x, const float* dt, const float* b, const float* c, int64_t ld_bc,
                   const float* a, const float* d, const float* z, int64_t ldz, int64_t len,
                   int64_t d_inner, int64_t d_state, float* state, float* y, int64_t c_begin,
                   int64_t c_end);

// dt[r][i] = softplus(dt[r][i] + bias[i]) for rows [0, rows): the dt projection's epilogue.
void SoftplusWithBias(float* dt, const float* bias, int64_t rows, int64_t dim);

}  // namespace mambaserve::cpu
