// Pre-norm of every layer (and norm_f) fused with the residual add of the previous mixer:
//   residual[r] += delta[r] + delta_bias;  out[i] = RMSNorm(residual[src]) * weight
// The residual stays fp32; `out` is written in the dtype of the GEMM that consumes it.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

struct ResidualRmsNormParams {
  float* residual = nullptr;          // [rows][dim] fp32
  const float* delta = nullptr;       // [rows][dim] fp32 mixer output to add first, or nullptr
  const float* delta_bias = nullptr;  // [dim] out_proj bias added with delta, or nullptr
  const float* weight = nullptr;      // [dim]
  void* out = nullptr;                // [out_rows][dim] in out_type
  GemmType out_type = GemmType::kF32;
  // Gather mode (norm_f before lm_head): output row i normalises residual row row_index[i] and
  // the residual is not written back. nullptr: output row r is residual row r, and the sum
  // residual + delta is stored back into the residual.
  const int32_t* row_index = nullptr;
  // Device-side count of valid output rows (<= out_rows), read by the kernel so a captured graph
  // can serve a varying number; nullptr means all out_rows.
  const int32_t* out_rows_device = nullptr;
  int64_t out_rows = 0;
  int64_t dim = 0;
  float eps = 1e-5f;
};

// CPU twin: residual add, then cpu::RmsNormRows (engine/cpu/mixer_ops.h).
LaunchResult InvokeResidualRmsNorm(const ResidualRmsNormParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
