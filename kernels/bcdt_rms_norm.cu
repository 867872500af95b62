#include "kernels/bcdt_rms_norm.h"
#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"

namespace mambaserve::kernels {
namespace {

// One warp per (row, segment): segments are at most a few hundred floats (R <= 256 for every
// released checkpoint), so a warp reduction is the whole job. blockDim = (32, 3).
template <typename T>
__global__ void BcdtRmsNormKernel(BcdtRmsNormParams p) {
  WaitForPreviousKernel();
  const int64_t row = blockIdx.x;
  const int segment = threadIdx.y;  // 0: dt_low, 1: B, 2: C
  const int lane = threadIdx.x;
  const int64_t begin = segment == 0 ? 0 : p.dt_rank + (segment - 1) * p.d_state;
  const int64_t len = segment == 0 ? p.dt_rank : p.d_state;
  float* x = p.x_dbl + row * p.ld_x_dbl + begin;
  float scale = 1.0f;
  if (p.normalize) {
    float sum_squares = 0.0f;
    for (int64_t j = lane; j < len; j += 32) sum_squares += x[j] * x[j];
    sum_squares = WarpSum(sum_squares);
    scale = math::RmsScale(sum_squares, static_cast<int>(len), p.eps);
  }
  if (segment == 0) {
    T* out = static_cast<T*>(p.dt_low) + row * p.ld_dt_low;
    for (int64_t j = lane; j < len; j += 32) {
      const float v = p.normalize ? x[j] * scale : x[j];
      out[j] = FromF32<T>(v);  // after the read: out may alias x
    }
  } else if (p.normalize) {
    for (int64_t j = lane; j < len; j += 32) x[j] = x[j] * scale;
  }
}

}  // namespace

LaunchResult InvokeBcdtRmsNorm(const BcdtRmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return 0;
  const dim3 block(32, 3);
  MS_DISPATCH_GEMM_TYPE(p.dt_low_type, T, [&] {
    LaunchKernel(BcdtRmsNormKernel<T>, static_cast<unsigned>(p.rows), block, stream, p);
  });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
