// Selective scan kernels, templated on the element type of the output y. Included once per type.
//
// Prefill thread mapping (chunks shorter than kChunkedScanMinTokens; the chunked parallel scan of
// selective_scan_chunked.cuh takes longer ones): each channel gets G lanes of a warp (d_state's
// register row length: 4, 8, 16 or 32), one state element h[n] per lane, so a Falcon-Mamba-7B
// prompt keeps E*16 = 131k threads busy through its token-sequential loop. h.C is a shuffle
// reduction within the G lanes; the gate runs when a tile is written out. A block covers kChannels
// channels (32 * G threads). Decode (SelectiveScanUpdateKernel) is one thread per (row, channel).
#pragma once

#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"
#include "kernels/selective_scan.h"
#include "kernels/selective_scan_chunked.cuh"

namespace mambaserve::kernels::scan_impl {

constexpr int kChannels = 32;    // channels per block: 128-byte rows of x/dt/z per token
constexpr int kTileTokens = 32;  // prefill tokens staged in shared memory per iteration

template <int kLanes>
__device__ __forceinline__ float GroupSum(float v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T, int kLanes>
__global__ void __launch_bounds__(kChannels* kLanes)
    SelectiveScanPrefillKernel(SelectiveScanParams p) {
  WaitForPreviousKernel();
  __shared__ float xs[kTileTokens][kChannels];
  __shared__ float dts[kTileTokens][kChannels];
  __shared__ float zs[kTileTokens][kChannels];
  __shared__ float ys[kTileTokens][kChannels];  // h.C, gated as it is written out
  __shared__ float ds[kChannels];
  __shared__ float bs[kTileTokens][math::kMaxStateSize];
  __shared__ float cs[kTileTokens][math::kMaxStateSize];

  const int chunk = blockIdx.y;
  const int64_t ch0 = static_cast<int64_t>(blockIdx.x) * kChannels;
  const int local_ch = threadIdx.x / kLanes;
  const int n = threadIdx.x % kLanes;
  const int64_t ch = ch0 + local_ch;
  const int N = p.d_state;
  const bool lane_active = ch < p.d_inner && n < N;
  const int64_t row0 = p.chunks.row_begin[chunk];
  const int64_t len = p.chunks.len[chunk];
  if (len >= kChunkedScanMinTokens) return;  // the chunked scan's chunk
  const int slot = p.chunks.slot[chunk];
  const bool has_state = slot >= 0 && p.chunks.fresh[chunk] == 0;
  float* state =
      slot >= 0 && lane_active ? p.ssm_state + slot * p.slot_stride + ch * N + n : nullptr;

  float h = has_state && lane_active ? *state : 0.0f;
  const float a = lane_active ? p.a[ch * N + n] : 0.0f;
  if (threadIdx.x < kChannels)
    ds[threadIdx.x] = ch0 + threadIdx.x < p.d_inner ? p.d[ch0 + threadIdx.x] : 0.0f;

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
      const float y_state = GroupSum<kLanes>(contrib);
      if (n == 0) ys[t][local_ch] = y_state;
    }
    __syncthreads();
    // The gate here, spread over every thread, rather than on one lane per channel in the loop.
    for (int i = threadIdx.x; i < kTileTokens * kChannels; i += blockDim.x) {
      const int t = i / kChannels, c = i % kChannels;
      if (t < tile_len && ch0 + c < p.d_inner) {
        static_cast<T*>(p.y)[(row0 + tile0 + t) * p.ld_y + ch0 + c] =
            FromF32<T>(math::GatedOutput(ys[t][c], ds[c], xs[t][c], zs[t][c]));
      }
    }
    // The next tile's staging overwrites xs/ys: wait until every thread is done with them.
    __syncthreads();
  }
  if (state != nullptr) *state = h;
}

// Decode: one thread per (row, channel), owning the channel's whole d_state row. A batch-256 step
// of Falcon-Mamba-7B reads and writes 38 MiB of state per sequence, so this kernel is a memory
// stream: each thread issues every load it needs (its h and A rows as 16-byte vectors where the
// layout allows, x, dt, z, B, C) before its first store, and h.C is summed in registers, with no
// shuffles and no idle lanes for a d_state under 32. kN >= d_state is the register row length
// (a multiple of 4); kVector: h and A rows are 16-byte aligned and d_state == kN.
constexpr int kUpdateThreads = 128;

template <int kN, bool kVector>
__device__ __forceinline__ void LoadRow(const float* __restrict__ src, int n_valid, float* out) {
  if constexpr (kVector) {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      out[i] = v.x, out[i + 1] = v.y, out[i + 2] = v.z, out[i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) out[i] = i < n_valid ? src[i] : 0.0f;
  }
}

template <typename T, int kN, bool kVector>
__global__ void __launch_bounds__(kUpdateThreads) SelectiveScanUpdateKernel(SelectiveScanParams p) {
  WaitForPreviousKernel();
  const int row = blockIdx.y;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kUpdateThreads + threadIdx.x;
  if (ch >= p.d_inner) return;
  const int N = p.d_state;
  const int slot = p.chunks.slot[row];
  const bool has_state = slot >= 0 && p.chunks.fresh[row] == 0;
  float* __restrict__ state = slot >= 0 ? p.ssm_state + slot * p.slot_stride + ch * N : nullptr;
  const float* __restrict__ b = p.b + row * p.ld_bc;
  const float* __restrict__ c = p.c + row * p.ld_bc;

  // Every load first.
  float h[kN], a[kN], bv[kN], cv[kN];
  if (has_state) {
    LoadRow<kN, kVector>(state, N, h);
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) h[i] = 0.0f;
  }
  LoadRow<kN, kVector>(p.a + ch * N, N, a);
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    bv[i] = i < N ? b[i] : 0.0f;
    cv[i] = i < N ? c[i] : 0.0f;
  }
  if (p.rms_normalize_bc) {
    float b_squares = 0.0f, c_squares = 0.0f;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      b_squares += bv[i] * bv[i];
      c_squares += cv[i] * cv[i];
    }
    const float b_scale = math::RmsScale(b_squares, N, p.bc_eps);
    const float c_scale = math::RmsScale(c_squares, N, p.bc_eps);
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      bv[i] *= b_scale;
      cv[i] *= c_scale;
    }
  }
  const float x = p.x[row * p.ld_x + ch];
  const float dt_raw = p.dt[row * p.ld_dt + ch];
  const float dt_bias = p.dt_bias[ch];
  const float z = p.z[row * p.ld_z + ch] + (p.z_bias != nullptr ? p.z_bias[ch] : 0.0f);
  const float d = p.d[ch];

  const float dt = math::DtSoftplus(dt_raw, dt_bias);
  const float dt_x = dt * x;
  float y_state = 0.0f;
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    h[i] = math::ScanStateStep(h[i], a[i], bv[i], dt, dt_x);
    y_state += h[i] * cv[i];  // padding: h = 0 (a = b = 0), c = 0
  }

  // Then the stores.
  if (state != nullptr) {
    if constexpr (kVector) {
#pragma unroll
      for (int i = 0; i < kN; i += 4)
        *reinterpret_cast<float4*>(state + i) = make_float4(h[i], h[i + 1], h[i + 2], h[i + 3]);
    } else {
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        if (i < N) state[i] = h[i];
      }
    }
  }
  static_cast<T*>(p.y)[row * p.ld_y + ch] = FromF32<T>(math::GatedOutput(y_state, d, x, z));
}

template <typename T, int kN>
void LaunchUpdateRows(const SelectiveScanParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.d_inner + kUpdateThreads - 1) / kUpdateThreads),
                  static_cast<unsigned>(p.chunks.num_chunks));
  const bool vector =
      p.d_state == kN && p.slot_stride % 4 == 0 && IsAligned16(p.ssm_state) && IsAligned16(p.a);
  if (vector) {
    LaunchKernel(SelectiveScanUpdateKernel<T, kN, true>, grid, kUpdateThreads, stream, p);
  } else {
    LaunchKernel(SelectiveScanUpdateKernel<T, kN, false>, grid, kUpdateThreads, stream, p);
  }
}

// WithStateRowLength's row lengths cover every supported d_state.
static_assert(math::kMaxStateSize == 32);
inline bool StateSizeSupported(const SelectiveScanParams& p) {
  return p.d_state >= 1 && p.d_state <= math::kMaxStateSize;
}

// Prefill: chunks of kChunkedScanMinTokens or more through the chunked parallel scan (not
// launched when max_len says there are none), the others through kChannels channels per block
// with G lanes each (the d_state reduction); one grid row per chunk in both launches, a block
// whose chunk is the other kernel's returning at once.
template <typename T>
LaunchResult LaunchPrefill(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.chunks.num_chunks == 0) return 0;
  if (!StateSizeSupported(p)) return static_cast<LaunchResult>(cudaErrorInvalidValue);
  if (p.chunks.max_len == 0 || p.chunks.max_len >= kChunkedScanMinTokens) {
    LaunchChunked<T>(p, stream);
    const LaunchResult chunked = LastLaunchResult();
    if (chunked != 0) return chunked;
  }
  const dim3 grid(static_cast<unsigned>((p.d_inner + kChannels - 1) / kChannels),
                  static_cast<unsigned>(p.chunks.num_chunks));
  WithStateRowLength(p.d_state, [&](auto row_length) {
    constexpr int kLanes = decltype(row_length)::value;
    LaunchKernel(SelectiveScanPrefillKernel<T, kLanes>, grid, kChannels * kLanes, stream, p);
  });
  return LastLaunchResult();
}

template <typename T>
LaunchResult LaunchUpdate(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.chunks.num_chunks == 0) return 0;
  if (!StateSizeSupported(p)) return static_cast<LaunchResult>(cudaErrorInvalidValue);
  WithStateRowLength(p.d_state, [&](auto row_length) {
    LaunchUpdateRows<T, decltype(row_length)::value>(p, stream);
  });
  return LastLaunchResult();
}

}  // namespace mambaserve::kernels::scan_impl
