#include "kernels/cuda_utils.cuh"
#include "kernels/skinny_gemm.h"

namespace mambaserve::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;  // 128 threads: many small blocks keep every SM's loads in flight

// 16 bytes of T as fp32 values.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
  static constexpr int kN = 4;
  __device__ static void Load(const float* p, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  }
  __device__ static void LoadStreaming(const float* p, float* out) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(p));
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  }
};
template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kN = 8;
  __device__ static void Unpack(uint4 v, float* out) {
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // bf16 -> fp32 is a 16-bit shift: exact.
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  }
  __device__ static void Load(const __nv_bfloat16* p, float* out) {
    Unpack(*reinterpret_cast<const uint4*>(p), out);
  }
  __device__ static void LoadStreaming(const __nv_bfloat16* p, float* out) {
    // Weights are read once per step: evict-first keeps L2 for the activations and the state.
    Unpack(__ldcs(reinterpret_cast<const uint4*>(p)), out);
  }
};

// A block is kWarpsPerBlock warps; `split` warps share one output column, each taking every
// split-th 16-byte slice of k, so short outputs (x_proj: R+2N = 288 columns) still put enough
// loads in flight on every SM. Partial sums meet in shared memory.
template <typename T, int kRows>
__global__ void SkinnyGemmKernel(SkinnyGemmParams p, int split) {
  using V = Vec16<T>;
  __shared__ float partial[kWarpsPerBlock][kRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int cols_per_block = kWarpsPerBlock / split;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * cols_per_block + warp / split;
  const int part = warp % split;
  const bool active = col < p.m;
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  if (active) {
    const T* w = static_cast<const T*>(p.w) + col * p.k;
    const T* x = static_cast<const T*>(p.x);
    const int64_t step = static_cast<int64_t>(32) * V::kN * split;
#pragma unroll 4
    for (int64_t k0 = (static_cast<int64_t>(part) * 32 + lane) * V::kN; k0 < p.k; k0 += step) {
      float wv[V::kN];
      V::LoadStreaming(w + k0, wv);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= p.rows) break;
        float xv[V::kN];
        V::Load(x + r * p.ldx + k0, xv);
#pragma unroll
        for (int i = 0; i < V::kN; ++i) acc[r] = fmaf(wv[i], xv[i], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float sum = WarpSum(acc[r]);
    if (lane == 0) partial[warp][r] = sum;
  }
  __syncthreads();
  if (active && part == 0 && lane < kRows && lane < p.rows) {
    float total = 0.0f;
    for (int s = 0; s < split; ++s) total += partial[warp + s][lane];
    p.y[lane * p.ldy + col] = total;
  }
}

template <typename T, int kRows>
void Launch(const SkinnyGemmParams& p, cudaStream_t stream) {
  // Few output columns: split k over 2 or 4 warps so at least ~1k warps stream the matrix.
  const int split = p.m >= 4096 ? 1 : p.m >= 1024 ? 2 : 4;
  const int cols_per_block = kWarpsPerBlock / split;
  const unsigned blocks = static_cast<unsigned>((p.m + cols_per_block - 1) / cols_per_block);
  SkinnyGemmKernel<T, kRows><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p, split);
}

template <typename T>
void LaunchRows(const SkinnyGemmParams& p, cudaStream_t stream) {
  // Row counts are compile-time so the accumulators stay in registers; 1, 2, 4, 8 cover the
  // decode buckets, other counts use the next size up with the extra rows skipped.
  switch (p.rows) {
    case 1:
      return Launch<T, 1>(p, stream);
    case 2:
      return Launch<T, 2>(p, stream);
    case 3:
    case 4:
      return Launch<T, 4>(p, stream);
    default:
      return Launch<T, 8>(p, stream);
  }
}

}  // namespace

LaunchResult InvokeSkinnyGemm(const SkinnyGemmParams& p, cudaStream_t stream) {
  if (!SkinnyGemmSupports(p)) return static_cast<LaunchResult>(cudaErrorNotSupported);
  MS_DISPATCH_GEMM_TYPE(p.type, T, [&] { LaunchRows<T>(p, stream); });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
