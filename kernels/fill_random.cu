#include <algorithm>

#include "kernels/cuda_utils.cuh"
#include "kernels/fill_random.h"

namespace mambaserve::kernels {
namespace {

__device__ __forceinline__ uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename T>
__global__ void FillKernel(FillParams p) {
  WaitForPreviousKernel();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.count;
       i += stride) {
    float v;
    if (p.kind == FillKind::kNegArange) {
      v = -static_cast<float>(i % p.period + 1);
    } else {
      const uint64_t r = SplitMix64(p.seed ^ (static_cast<uint64_t>(i) * 0xd1b54a32d192ed03ull));
      const float u1 = (static_cast<float>(r >> 40) + 1.0f) * 0x1.0p-24f;       // (0, 1]
      const float u2 = static_cast<float>((r >> 16) & 0xffffffu) * 0x1.0p-24f;  // [0, 1)
      const float unit = p.kind == FillKind::kNormal ? sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2)
                                                     : 2.0f * u2 - 1.0f;
      v = p.mean + p.scale * unit;
    }
    static_cast<T*>(p.out)[i] = FromF32<T>(v);
  }
}

}  // namespace

LaunchResult InvokeFill(const FillParams& p, cudaStream_t stream) {
  if (p.count == 0) return 0;
  // Grid-stride loop: 1024 blocks of 256 saturate any current GPU's bandwidth.
  const int64_t blocks = std::min<int64_t>(1024, (p.count + 255) / 256);
  MS_DISPATCH_GEMM_TYPE(p.type, T, [&] {
    LaunchKernel(FillKernel<T>, static_cast<unsigned>(blocks), 256, stream, p);
  });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
