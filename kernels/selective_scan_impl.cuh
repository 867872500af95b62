// Selective scan kernels, templated on the element type of the output y. Included once per type.
//
// Thread mapping: each channel gets G = next_pow2(N) lanes of a warp, one state element h[n] per
// lane, so a Falcon-Mamba-7B sequence keeps E*16 = 131k threads busy instead of E = 8k (one
// thread per channel would leave most SMs idle at batch 1). h.C is a shuffle reduction within the
// G lanes. A block covers kChannels channels (32 * G threads).
#pragma once

#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"
#include "kernels/selective_scan.h"

namespace mambaserve::kernels::scan_impl {

constexpr int kChannels = 32;    // channels per block: 128-byte rows of x/dt/z per token
constexpr int kTileTokens = 32;  // prefill tokens staged in shared memory per iteration

inline int LanesPerChannel(int n) {
  int g = 1;
  while (g < n) g <<= 1;
  return g;
}

__device__ __forceinline__ float GroupSum(float v, int lanes) {
  for (int offset = lanes >> 1; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__global__ void SelectiveScanPrefillKernel(SelectiveScanParams p, int lanes) {
  __shared__ float xs[kTileTokens][kChannels];
  __shared__ float dts[kTileTokens][kChannels];
  __shared__ float zs[kTileTokens][kChannels];
  __shared__ float ys[kTileTokens][kChannels];
  __shared__ float bs[kTileTokens][math::kMaxStateSize];
  __shared__ float cs[kTileTokens][math::kMaxStateSize];

  const int chunk = blockIdx.y;
  const int64_t ch0 = static_cast<int64_t>(blockIdx.x) * kChannels;
  const int local_ch = threadIdx.x / lanes;
  const int n = threadIdx.x % lanes;
  const int64_t ch = ch0 + local_ch;
  const int N = p.d_state;
  const bool lane_active = ch < p.d_inner && n < N;
  const int64_t row0 = p.chunks.row_begin[chunk];
  const int64_t len = p.chunks.len[chunk];
  const int slot = p.chunks.slot[chunk];
  const bool has_state = slot >= 0 && p.chunks.fresh[chunk] == 0;
  float* state =
      slot >= 0 && lane_active ? p.ssm_state + slot * p.slot_stride + ch * N + n : nullptr;

  float h = has_state && lane_active ? *state : 0.0f;
  const float a = lane_active ? p.a[ch * N + n] : 0.0f;
  const float d = ch < p.d_inner ? p.d[ch] : 0.0f;

  for (int64_t tile0 = 0; tile0 < len; tile0 += kTileTokens) {
    const int tile_len = len - tile0 < kTileTokens ? static_cast<int>(len - tile0) : kTileTokens;
    // Stage x, softplus(dt), z for the block's channels and B, C for the tile's tokens.
    for (int i = threadIdx.x; i < kTileTokens * kChannels; i += blockDim.x) {
      const int t = i / kChannels, c = i % kChannels;
      const int64_t gch = ch0 + c;
      if (t < tile_len && gch < p.d_inner) {
        const int64_t r = row0 + tile0 + t;
        xs[t][c] = p.x[r * p.ld_x + gch];
        dts[t][c] = math::DtSoftplus(p.dt[r * p.ld_dt + gch], p.dt_bias[gch]);
        zs[t][c] = p.z[r * p.ld_z + gch] + (p.z_bias != nullptr ? p.z_bias[gch] : 0.0f);
      }
    }
    for (int i = threadIdx.x; i < kTileTokens * N; i += blockDim.x) {
      const int t = i / N, k = i % N;
      if (t < tile_len) {
        const int64_t r = row0 + tile0 + t;
        bs[t][k] = p.b[r * p.ld_bc + k];
        cs[t][k] = p.c[r * p.ld_bc + k];
      }
    }
    __syncthreads();
    for (int t = 0; t < tile_len; ++t) {
      float contrib = 0.0f;
      if (lane_active) {
        const float dt = dts[t][local_ch], x = xs[t][local_ch];
        h = math::ScanStateStep(h, a, bs[t][n], dt, dt * x);
        contrib = h * cs[t][n];
      }
      const float y_state = GroupSum(contrib, lanes);
      if (n == 0 && ch < p.d_inner)
        ys[t][local_ch] = math::GatedOutput(y_state, d, xs[t][local_ch], zs[t][local_ch]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kTileTokens * kChannels; i += blockDim.x) {
      const int t = i / kChannels, c = i % kChannels;
      if (t < tile_len && ch0 + c < p.d_inner) {
        static_cast<T*>(p.y)[(row0 + tile0 + t) * p.ld_y + ch0 + c] = FromF32<T>(ys[t][c]);
      }
    }
    // The next tile's staging overwrites xs/ys: wait until every thread is done with them.
    __syncthreads();
  }
  if (state != nullptr) *state = h;
}

// Decode: one token per row; the same lane mapping, no staging (each value is used once).
template <typename T>
__global__ void SelectiveScanUpdateKernel(SelectiveScanParams p, int lanes) {
  const int row = blockIdx.y;
  const int local_ch = threadIdx.x / lanes;
  const int n = threadIdx.x % lanes;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kChannels + local_ch;
  if (ch >= p.d_inner) return;  // whole lane groups leave together: shuffles stay in-group
  const int N = p.d_state;
  const bool lane_active = n < N;
  const int slot = p.chunks.slot[row];
  const bool has_state = slot >= 0 && p.chunks.fresh[row] == 0;
  float* state =
      slot >= 0 && lane_active ? p.ssm_state + slot * p.slot_stride + ch * N + n : nullptr;

  const float x = p.x[row * p.ld_x + ch];
  const float dt = math::DtSoftplus(p.dt[row * p.ld_dt + ch], p.dt_bias[ch]);
  float contrib = 0.0f;
  if (lane_active) {
    const float h0 = has_state ? *state : 0.0f;
    const float h = math::ScanStateStep(h0, p.a[ch * N + n], p.b[row * p.ld_bc + n], dt, dt * x);
    if (state != nullptr) *state = h;
    contrib = h * p.c[row * p.ld_bc + n];
  }
  const unsigned group_mask =
      lanes == 32 ? 0xffffffffu : (((1u << lanes) - 1u) << ((threadIdx.x & 31) / lanes * lanes));
  float y_state = contrib;
  for (int offset = lanes >> 1; offset > 0; offset >>= 1)
    y_state += __shfl_xor_sync(group_mask, y_state, offset);
  if (n == 0) {
    const float z = p.z[row * p.ld_z + ch] + (p.z_bias != nullptr ? p.z_bias[ch] : 0.0f);
    static_cast<T*>(p.y)[row * p.ld_y + ch] = FromF32<T>(math::GatedOutput(y_state, p.d[ch], x, z));
  }
}

// Prefill and update share the launch shape: kChannels channels per block with `lanes` threads
// each (the d_state reduction), one grid row per chunk.
inline LaunchResult LaunchOverChannels(const SelectiveScanParams& p,
                                       void (*kernel)(SelectiveScanParams, int),
                                       cudaStream_t stream) {
  if (p.chunks.num_chunks == 0) return 0;
  if (p.d_state < 1 || p.d_state > math::kMaxStateSize)
    return static_cast<LaunchResult>(cudaErrorInvalidValue);
  const int lanes = LanesPerChannel(p.d_state);
  const dim3 grid(static_cast<unsigned>((p.d_inner + kChannels - 1) / kChannels),
                  static_cast<unsigned>(p.chunks.num_chunks));
  LaunchKernel(kernel, grid, kChannels * lanes, stream, p, lanes);
  return LastLaunchResult();
}

template <typename T>
LaunchResult LaunchPrefill(const SelectiveScanParams& p, cudaStream_t stream) {
  return LaunchOverChannels(p, SelectiveScanPrefillKernel<T>, stream);
}

template <typename T>
LaunchResult LaunchUpdate(const SelectiveScanParams& p, cudaStream_t stream) {
  return LaunchOverChannels(p, SelectiveScanUpdateKernel<T>, stream);
}

}  // namespace mambaserve::kernels::scan_impl
