#include "kernels/argmax.h"
#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"

namespace mambaserve::kernels {
namespace {

// One block per row: a 65k-entry row is 256 KiB, read once with coalesced strided loads, then a
// warp and a block reduction of (value, index) pairs under ArgMaxPrefers.
constexpr int kThreads = 512;

struct Candidate {
  float value;
  int index;
  int non_finite;  // a NaN or an infinity was seen
};

__device__ __forceinline__ Candidate Better(Candidate a, Candidate b) {
  Candidate best = math::ArgMaxPrefers(a.value, a.index, b.value, b.index) ? a : b;
  best.non_finite = a.non_finite | b.non_finite;
  return best;
}

__device__ __forceinline__ Candidate WarpBest(Candidate c) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const Candidate other{__shfl_xor_sync(0xffffffffu, c.value, offset),
                          __shfl_xor_sync(0xffffffffu, c.index, offset),
                          __shfl_xor_sync(0xffffffffu, c.non_finite, offset)};
    c = Better(c, other);
  }
  return c;
}

__global__ void ArgMaxKernel(ArgMaxParams p) {
  WaitForPreviousKernel();
  __shared__ float values[32];
  __shared__ int indices[32];
  __shared__ int non_finite[32];
  const float* row = p.logits + static_cast<int64_t>(blockIdx.x) * p.ld;
  // Out-of-range lanes start from (NaN, past the end): every real candidate is preferred.
  Candidate best{__int_as_float(0x7fffffff), static_cast<int>(p.cols), 0};
  for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
    best = Better(Candidate{row[j], static_cast<int>(j), !math::IsFinite(row[j])}, best);
  }
  best = WarpBest(best);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    values[warp] = best.value;
    indices[warp] = best.index;
    non_finite[warp] = best.non_finite;
  }
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x >> 5;
    Candidate c = lane < num_warps
                      ? Candidate{values[lane], indices[lane], non_finite[lane]}
                      : Candidate{__int_as_float(0x7fffffff), static_cast<int>(p.cols), 0};
    c = WarpBest(c);
    if (lane == 0) p.out[blockIdx.x] = c.non_finite ? math::kNonFiniteRow : c.index;
  }
}

}  // namespace

LaunchResult InvokeArgMax(const ArgMaxParams& p, cudaStream_t stream) {
  if (p.rows == 0) return 0;
  if (p.cols < 1 || p.cols > 0x7fffffff || p.ld < p.cols)
    return static_cast<LaunchResult>(cudaErrorInvalidValue);
  LaunchKernel(ArgMaxKernel, static_cast<unsigned>(p.rows), kThreads, stream, p);
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
