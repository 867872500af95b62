// Prefill of long chunks: the chunked parallel selective scan.
//
// The recurrence h_t = dA_t h_(t-1) + dBx_t (dA = exp(dt A), dBx = dt x B) is a composition of
// affine maps, which is associative: the pair (a1, b1) followed by (a2, b2) is
// (a1 a2, a2 b1 + b2). A warp owns one channel and a tile of 32 * kItems consecutive tokens,
// kItems per lane. For each state element a lane folds its items into one pair, a butterfly over
// the warp gives every lane the pair of the tokens before its own, and the lane applies that to
// the tile's incoming state and runs its items again from there, adding h.C to each item's
// output in registers. The tile's outgoing state is the whole warp's pair applied to the incoming
// one. A lane's dependent chain is kItems tokens per tile instead of every token of the chunk,
// h.C needs no cross-lane sum, and B and C are read from shared memory once per 4 tokens.
//
// Only chunks of at least kChunkedScanMinTokens tokens are this kernel's (the token-sequential
// kernel takes the others, in a launch of its own), so a chunk's outputs depend on its own length
// and never on the other chunks of its pass. The two kernels agree to fp32 rounding, not bit for
// bit: here the incoming state reaches a token through the pairs' products, and dA is exp2 of
// dt * A log2(e) (one MUFU.EX2 rather than expf's dozen instructions; the reference
// implementation does the same).
//
// Cost at d_state 16 (PTX for sm_90, non-move instructions, the tile's loads, gates and stores
// included): 24 per (token, channel, state), against 43 for the token-sequential kernel, whose
// h.C is a shuffle sum over 16 lanes (bench/roofline.py).
#pragma once

#include "kernels/cuda_utils.cuh"
#include "kernels/mamba_math.h"
#include "kernels/selective_scan.h"

namespace mambaserve::kernels::scan_impl {

constexpr int kChunkedWarps = 8;  // channels per block: 32-byte rows of x, dt and z per token
constexpr int kChunkedThreads = 32 * kChunkedWarps;

// Tokens per lane. A lane's registers hold kItems values each of dt, dt*x, x, y, B, C and dA
// beside its kN values of A and the state: 8 items keep that within 128 registers (two blocks per
// SM) at d_state 16; at 32 the B and C tiles (kN rows of 32 * kItems floats each) would pass
// 48 KiB of shared memory with 8, so 4.
template <int kN>
constexpr int kChunkedItems = kN <= 16 ? 8 : 4;

// h -> a h + b.
struct ScanPair {
  float a, b;
};

// `earlier` then `later`.
__device__ __forceinline__ ScanPair Compose(ScanPair earlier, ScanPair later) {
  return {earlier.a * later.a, later.a * earlier.b + later.b};
}

// Over the 32 lanes of a warp, with xor shuffles only: returns the composition of the pairs of
// the lanes below this one (the identity for lane 0) and sets *warp_total to that of all 32.
// Every lane composes the same operands in the same order at each step, so every lane's
// *warp_total is the same bits.
__device__ __forceinline__ ScanPair WarpExclusiveScan(ScanPair pair, int lane,
                                                      ScanPair* warp_total) {
  ScanPair total = pair, before{1.0f, 0.0f};
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const ScanPair other{__shfl_xor_sync(0xffffffffu, total.a, offset),
                         __shfl_xor_sync(0xffffffffu, total.b, offset)};
    if (lane & offset) {  // `other` is the group below
      before = Compose(other, before);
      total = Compose(other, total);
    } else {
      total = Compose(total, other);
    }
  }
  *warp_total = total;
  return before;
}

template <typename T, int kN>
__global__ void __launch_bounds__(kChunkedThreads, 2)
    SelectiveScanChunkedKernel(SelectiveScanParams p) {
  WaitForPreviousKernel();
  constexpr int kItems = kChunkedItems<kN>;
  constexpr int kTile = 32 * kItems;
  // B and C transposed, [n][token] as float4s so that a lane reads its items 4 at a time; the
  // extra float4 per row spreads the staging stores over more banks.
  constexpr int kRowVectors = kTile / 4 + 1;
  __shared__ float4 b_tile[kN][kRowVectors];
  __shared__ float4 c_tile[kN][kRowVectors];

  const int lane = threadIdx.x % 32;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kChunkedWarps + threadIdx.x / 32;
  const bool active = ch < p.d_inner;  // the same for the whole warp
  const int chunk = blockIdx.y;
  const int N = p.d_state;
  const int64_t row0 = p.chunks.row_begin[chunk];
  const int64_t len = p.chunks.len[chunk];
  if (len < kChunkedScanMinTokens) return;  // the token-sequential kernel's chunk
  const int slot = p.chunks.slot[chunk];
  const bool has_state = slot >= 0 && p.chunks.fresh[chunk] == 0;
  float* state = slot >= 0 && active ? p.ssm_state + slot * p.slot_stride + ch * N : nullptr;

  constexpr float kLog2e = 1.4426950408889634f;
  float a_log2e[kN], h_in[kN];  // A log2(e); h_in: the state entering the current tile
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    a_log2e[n] = active && n < N ? p.a[ch * N + n] * kLog2e : 0.0f;
    h_in[n] = has_state && state != nullptr && n < N ? state[n] : 0.0f;
  }
  const float dt_bias = active ? p.dt_bias[ch] : 0.0f;
  const float d = active ? p.d[ch] : 0.0f;
  const float z_bias = active && p.z_bias != nullptr ? p.z_bias[ch] : 0.0f;

  for (int64_t tile0 = 0; tile0 < len; tile0 += kTile) {
    const int tile_len = len - tile0 < kTile ? static_cast<int>(len - tile0) : kTile;
    const int64_t r0 = row0 + tile0;
    // Zeros past the chunk's end: a token there has dt = 0, so its pair is the identity
    // (dA = 1, dt x B = 0) whatever the unwritten memory held.
    float* b_flat = reinterpret_cast<float*>(&b_tile[0][0]);
    float* c_flat = reinterpret_cast<float*>(&c_tile[0][0]);
    for (int i = threadIdx.x; i < kTile * N; i += kChunkedThreads) {
      const int t = i / N, n = i % N;
      const bool valid = t < tile_len;
      b_flat[n * kRowVectors * 4 + t] = valid ? p.b[(r0 + t) * p.ld_bc + n] : 0.0f;
      c_flat[n * kRowVectors * 4 + t] = valid ? p.c[(r0 + t) * p.ld_bc + n] : 0.0f;
    }
    const int first = lane * kItems;
    float x[kItems], dt[kItems], dt_x[kItems], y[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const bool valid = active && first + i < tile_len;
      const int64_t r = r0 + first + i;
      x[i] = valid ? p.x[r * p.ld_x + ch] : 0.0f;
      dt[i] = valid ? math::DtSoftplus(p.dt[r * p.ld_dt + ch], dt_bias) : 0.0f;
      dt_x[i] = dt[i] * x[i];
      y[i] = 0.0f;
    }
    __syncthreads();

    if (active) {
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        if (n >= N) break;
        float b[kItems], c[kItems], da[kItems];
#pragma unroll
        for (int v = 0; v < kItems / 4; ++v) {
          const float4 bv = b_tile[n][lane * (kItems / 4) + v];
          const float4 cv = c_tile[n][lane * (kItems / 4) + v];
          b[4 * v] = bv.x, b[4 * v + 1] = bv.y, b[4 * v + 2] = bv.z, b[4 * v + 3] = bv.w;
          c[4 * v] = cv.x, c[4 * v + 1] = cv.y, c[4 * v + 2] = cv.z, c[4 * v + 3] = cv.w;
        }
        ScanPair mine{1.0f, 0.0f};
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          da[i] = exp2f(dt[i] * a_log2e[n]);  // exp(dt A)
          mine = {mine.a * da[i], da[i] * mine.b + dt_x[i] * b[i]};
        }
        ScanPair warp_total;
        const ScanPair before = WarpExclusiveScan(mine, lane, &warp_total);
        float h = before.a * h_in[n] + before.b;
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          h = da[i] * h + dt_x[i] * b[i];
          y[i] += h * c[i];
        }
        h_in[n] = warp_total.a * h_in[n] + warp_total.b;
      }
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        if (first + i >= tile_len) break;
        const int64_t r = r0 + first + i;
        const float z = p.z[r * p.ld_z + ch] + z_bias;
        static_cast<T*>(p.y)[r * p.ld_y + ch] = FromF32<T>(math::GatedOutput(y[i], d, x[i], z));
      }
    }
    __syncthreads();  // the next tile's staging overwrites b_tile and c_tile
  }
  if (state != nullptr && lane == 0) {
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      if (n < N) state[n] = h_in[n];
    }
  }
}

template <typename T, int kN>
void LaunchChunkedRows(const SelectiveScanParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.d_inner + kChunkedWarps - 1) / kChunkedWarps),
                  static_cast<unsigned>(p.chunks.num_chunks));
  LaunchKernel(SelectiveScanChunkedKernel<T, kN>, grid, kChunkedThreads, stream, p);
}

template <typename T>
void LaunchChunked(const SelectiveScanParams& p, cudaStream_t stream) {
  WithStateRowLength(p.d_state, [&](auto row_length) {
    LaunchChunkedRows<T, decltype(row_length)::value>(p, stream);
  });
}

}  // namespace mambaserve::kernels::scan_impl
