#include "kernels/cuda_utils.cuh"
#include "kernels/embedding.h"

namespace mambaserve::kernels {
namespace {

template <typename T>
__global__ void EmbeddingKernel(const T* __restrict__ table, const int32_t* __restrict__ tokens,
                                float* __restrict__ out, int64_t dim) {
  WaitForPreviousKernel();
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(tokens[row]) * dim;
  float* dst = out + row * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = ToF32(src[i]);
}

}  // namespace

LaunchResult InvokeEmbedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (p.rows == 0) return 0;
  // One block per row: a row is a few KiB, 256 threads stream it in a handful of coalesced passes.
  constexpr int kThreads = 256;
  MS_DISPATCH_GEMM_TYPE(p.table_type, T, [&] {
    LaunchKernel(EmbeddingKernel<T>, static_cast<unsigned>(p.rows), kThreads, stream,
                 static_cast<const T*>(p.table), p.tokens, p.out, p.dim);
  });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
