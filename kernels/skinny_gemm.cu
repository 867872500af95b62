#include <cstdint>
#include <type_traits>

#include "kernels/conv_update.cuh"
#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"
#include "kernels/skinny_gemm.h"

namespace mambaserve::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;  // 128 threads: many small blocks keep every SM's loads in flight
// Output columns per warp: each activation load feeds two weight rows, which keeps the L1 traffic
// of an 8-row batch (8 activation loads per weight load) under the SM's 128 B/clock.
constexpr int kCols = 2;

// kN consecutive elements of T as fp32. The vector path needs 16-byte aligned addresses.
template <typename T, int kN, bool kVector>
struct Loader;
template <int kN>
struct Loader<float, kN, true> {
  __device__ static void Load(const float* p, float* out) {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(p + i);
      out[i] = v.x, out[i + 1] = v.y, out[i + 2] = v.z, out[i + 3] = v.w;
    }
  }
  __device__ static void LoadStreaming(const float* p, float* out) {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 v = __ldcs(reinterpret_cast<const float4*>(p + i));
      out[i] = v.x, out[i + 1] = v.y, out[i + 2] = v.z, out[i + 3] = v.w;
    }
  }
};
template <int kN>
struct Loader<__nv_bfloat16, kN, true> {
  static_assert(kN == 8, "one 16-byte load");
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
  // Weights are read once per step: evict-first keeps L2 for the activations and the state.
  __device__ static void LoadStreaming(const __nv_bfloat16* p, float* out) {
    Unpack(__ldcs(reinterpret_cast<const uint4*>(p)), out);
  }
};
template <typename T, int kN>
struct Loader<T, kN, false> {
  static_assert(kN == 1, "scalar path");
  __device__ static void Load(const T* p, float* out) { out[0] = ToF32(p[0]); }
  __device__ static void LoadStreaming(const T* p, float* out) { out[0] = ToF32(p[0]); }
};

// A block is kWarpsPerBlock warps; `split` warps share one pair of output columns, each taking
// every split-th slice of k, so short outputs (x_proj: R+2N = 288 columns) still put enough loads
// in flight on every SM. Partial sums meet in shared memory.
template <typename TW, typename TX, int kRows, bool kVector>
__global__ void SkinnyGemmKernel(SkinnyGemmParams p, int split, int64_t k_chunk) {
  WaitForPreviousKernel();
  constexpr int kN = kVector ? 16 / static_cast<int>(sizeof(TW)) : 1;
  // k-steps whose weight loads are in flight together: 32 weights per column in registers.
  constexpr int kBatch = kVector ? 32 / kN : 4;
  using WL = Loader<TW, kN, kVector>;
  using XL = Loader<TX, kN, kVector>;
  __shared__ float partial[kWarpsPerBlock][kRows][kCols];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // x_f32 mode (fp32 X under bf16 W, or fp32 X to normalise): each row's RMS scale, one warp per
  // row, before any product.
  [[maybe_unused]] constexpr bool kRoundX = std::is_same_v<TX, float> && !std::is_same_v<TW, float>;
  __shared__ float x_scale[kRows];
  if constexpr (std::is_same_v<TX, float>) {
    if (p.rms_normalize_x) {
      const float* x = static_cast<const float*>(p.x);
      for (int r = warp; r < kRows; r += kWarpsPerBlock) {
        float sum_squares = 0.0f;
        if (r < p.rows) {
          for (int64_t k = lane; k < p.k; k += 32)
            sum_squares += x[r * p.ldx + k] * x[r * p.ldx + k];
        }
        sum_squares = WarpSum(sum_squares);
        if (lane == 0) x_scale[r] = math::RmsScale(sum_squares, static_cast<int>(p.k), p.x_eps);
      }
      __syncthreads();
    }
  }
  const int groups_per_block = kWarpsPerBlock / split;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * groups_per_block + warp / split) * kCols;
  const int part = warp % split;
  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  if (col0 < p.m) {
    // Branch-free: the second column of an odd-sized matrix re-reads the first, and rows past
    // p.rows re-read the last row; neither sum is ever written.
    const TW* w0 = static_cast<const TW*>(p.w) + col0 * p.k;
    const TW* w1 = col0 + 1 < p.m ? w0 + p.k : w0;
    const TX* x_rows[kRows];
    float x_mul[kRows];  // fp32 X: its row's RMS scale, or 1
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = r < p.rows ? r : p.rows - 1;
      x_rows[r] = static_cast<const TX*>(p.x) + row * p.ldx;
      x_mul[r] = 1.0f;
      if constexpr (std::is_same_v<TX, float>) {
        if (p.rms_normalize_x) x_mul[r] = x_scale[row];
      }
    }
    // One k-step: every row's activations times both columns' weights.
    const auto multiply = [&](const float(&wv)[kCols][kN], int64_t k) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float xv[kN];
        XL::Load(x_rows[r] + k, xv);
        if constexpr (std::is_same_v<TX, float>) {
          // Normalised and rounded exactly as the B/C/dt norm kernel would have written them.
#pragma unroll
          for (int i = 0; i < kN; ++i) {
            xv[i] = kRoundX ? ToF32(FromF32<TW>(xv[i] * x_mul[r])) : xv[i] * x_mul[r];
          }
        }
#pragma unroll
        for (int i = 0; i < kN; ++i) {
          acc[r][0] = fmaf(wv[0][i], xv[i], acc[r][0]);
          acc[r][1] = fmaf(wv[1][i], xv[i], acc[r][1]);
        }
      }
    };
    const int64_t step = static_cast<int64_t>(32) * kN * split;
    // This block's k range (all of k unless split across blocks).
    const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * k_chunk;
    const int64_t k_end = min(p.k, k_begin + k_chunk);
    int64_t k0 = k_begin + (static_cast<int64_t>(part) * 32 + lane) * kN;
    // kBatch k-steps at a time, all of their weight loads (2 * kBatch of 16 bytes) issued before
    // the first FMA, so each lane keeps them in flight together; then the remaining steps.
    for (; k0 + (kBatch - 1) * step < k_end; k0 += kBatch * step) {
      float wv[kBatch][kCols][kN];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        WL::LoadStreaming(w0 + k0 + u * step, wv[u][0]);
        WL::LoadStreaming(w1 + k0 + u * step, wv[u][1]);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) multiply(wv[u], k0 + u * step);
    }
    for (; k0 < k_end; k0 += step) {
      float wv[kCols][kN];
      WL::LoadStreaming(w0 + k0, wv[0]);
      WL::LoadStreaming(w1 + k0, wv[1]);
      multiply(wv, k0);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const float sum = WarpSum(acc[r][c]);
      if (lane == 0) partial[warp][r][c] = sum;
    }
  }
  __syncthreads();
  // Lane (r, c) of the group's first warp writes y[r][col0 + c].
  const int r = lane / kCols, c = lane % kCols;
  const bool writer = part == 0 && r < kRows && r < p.rows && col0 + c < p.m;
  float total = 0.0f;
  if (writer) {
    for (int s = 0; s < split; ++s) total += partial[warp + s][r][c];
  }
  if (p.k_blocks == 1) {
    if (!writer) return;
    if (p.fuse_conv && col0 + c < p.conv.d_inner) {
      ConvUpdate<TW>(p.conv, r, col0 + c, total);
    } else {
      p.y[r * p.ldy + col0 + c] = total;
    }
    return;
  }
  // Split across blocks: this block's sums to its slice of the scratch; the last block of the
  // column pair to arrive adds every slice, in k order, and resets the pair's counter.
  const int64_t column = col0 + c;
  if (writer) p.partials[(blockIdx.y * p.rows + r) * p.m + column] = total;
  __threadfence();
  __syncthreads();
  __shared__ int is_last[kWarpsPerBlock];
  const bool group_head = part == 0 && col0 < p.m;
  if (group_head && lane == 0) {
    const unsigned arrived = atomicAdd(&p.counters[col0 / kCols], 1u);
    is_last[warp] = arrived == static_cast<unsigned>(p.k_blocks - 1);
  }
  __syncthreads();
  if (!group_head || !is_last[warp]) return;
  __threadfence();
  if (writer) {
    float sum = 0.0f;
    for (int kb = 0; kb < p.k_blocks; ++kb)
      sum += __ldcg(&p.partials[(kb * p.rows + r) * p.m + column]);
    p.y[r * p.ldy + column] = sum;
  }
  if (lane == 0) p.counters[col0 / kCols] = 0;  // ready for the next launch (graph replays too)
}

template <typename TW, typename TX, int kRows, bool kVector>
void Launch(const SkinnyGemmParams& p, cudaStream_t stream) {
  // Few output columns: split k over 2 or 4 warps so that ~1k+ warps stream the matrix.
  const int64_t groups = (p.m + kCols - 1) / kCols;
  const int split = groups >= 2048 ? 1 : groups >= 512 ? 2 : 4;
  const int groups_per_block = kWarpsPerBlock / split;
  const unsigned blocks = static_cast<unsigned>((groups + groups_per_block - 1) / groups_per_block);
  // Each k range a whole number of vectors, so every block's loads stay aligned.
  constexpr int64_t kN = kVector ? 16 / static_cast<int64_t>(sizeof(TW)) : 1;
  const int64_t k_chunk = ((p.k + p.k_blocks - 1) / p.k_blocks + kN - 1) / kN * kN;
  LaunchKernel(SkinnyGemmKernel<TW, TX, kRows, kVector>,
               dim3(blocks, static_cast<unsigned>(p.k_blocks)), 32 * kWarpsPerBlock, stream, p,
               split, k_chunk);
}

template <typename TW, typename TX, bool kVector>
void LaunchRows(const SkinnyGemmParams& p, cudaStream_t stream) {
  // Row counts are compile-time so the accumulators stay in registers; other counts use the next
  // size up with the extra rows skipped.
  if (p.rows == 1) return Launch<TW, TX, 1, kVector>(p, stream);
  if (p.rows == 2) return Launch<TW, TX, 2, kVector>(p, stream);
  if (p.rows <= 4) return Launch<TW, TX, 4, kVector>(p, stream);
  return Launch<TW, TX, 8, kVector>(p, stream);
}

template <typename TW, typename TX>
void LaunchTypes(const SkinnyGemmParams& p, cudaStream_t stream) {
  // 16-byte vectors need k and ldx to be whole vectors and the bases aligned.
  const int64_t vec = 16 / static_cast<int64_t>(sizeof(TW));
  if (p.k % vec == 0 && p.ldx % vec == 0 && IsAligned16(p.w) && IsAligned16(p.x)) {
    LaunchRows<TW, TX, true>(p, stream);
  } else {
    LaunchRows<TW, TX, false>(p, stream);
  }
}

}  // namespace

LaunchResult InvokeSkinnyGemm(const SkinnyGemmParams& p, cudaStream_t stream) {
  if (!SkinnyGemmSupports(p)) return static_cast<LaunchResult>(cudaErrorNotSupported);
  if (p.type == GemmType::kF32) {
    LaunchTypes<float, float>(p, stream);
  } else if (p.x_f32) {
    LaunchTypes<__nv_bfloat16, float>(p, stream);
  } else {
    LaunchTypes<__nv_bfloat16, __nv_bfloat16>(p, stream);
  }
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels
