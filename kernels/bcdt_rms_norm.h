// Falcon-Mamba's weightless RMSNorm of dt_low, B and C (each over its own columns of x_proj's
// output), and the copy of dt_low into the dtype of the dt_proj GEMM.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

struct BcdtRmsNormParams {
  float* x_dbl = nullptr;  // [rows][ld_x_dbl] = dt_low [R] | B [N] | C [N]; normalised in place
  int64_t ld_x_dbl = 0;
  void* dt_low = nullptr;  // [rows][ld_dt_low] dt_low in dt_low_type (may alias x_dbl for f32)
  int64_t ld_dt_low = 0;
  GemmType dt_low_type = GemmType::kF32;
  int64_t rows = 0;
  int64_t dt_rank = 0;    // R
  int64_t d_state = 0;    // N
  bool normalize = true;  // false (Mamba-1): only the dt_low copy
  float eps = 1e-6f;
};

// CPU twin: cpu::RmsNormRows with w == nullptr on each of the three column ranges.
LaunchResult InvokeBcdtRmsNorm(const BcdtRmsNormParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
