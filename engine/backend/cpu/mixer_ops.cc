#include "engine/backend/cpu/mixer_ops.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/backend/cpu/fast_math.h"
#include "kernels/mamba_math.h"

// One copy per instruction set, picked at load time by an ifunc resolver. ThreadSanitizer
// instruments that resolver, which then runs before the sanitizer is initialised and crashes, so
// TSan builds keep the default copy only.
#if defined(__SANITIZE_THREAD__)
#define MAMBASERVE_CPU_CLONES
#else
#define MAMBASERVE_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

namespace mambaserve::cpu {

void RmsNormRows(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, int64_t rows,
                 int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    float sum_squares = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_squares += xr[i] * xr[i];
    const float scale = math::RmsScale(sum_squares, static_cast<int>(dim), eps);
    if (w != nullptr) {
      for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * scale * w[i];
    } else {
      for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * scale;
    }
  }
}

namespace {

// One decode token of the conv for a compile-time window: the same arithmetic as the generic loop
// below, written so the channel loop vectorises (the strided state rows become shuffles).
template <int64_t kHist>
inline void ConvDecodeStep(const float* __restrict x, const float* __restrict weight,
                           const float* __restrict bias, float* __restrict state,
                           float* __restrict out, int64_t c_begin, int64_t c_end) {
#pragma omp simd
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    float* st = state + ch * kHist;
    const float* w = weight + ch * (kHist + 1);
    float window[kHist];
    for (int64_t k = 0; k < kHist; ++k) window[k] = st[k];
    const float xv = x[ch];
    float acc = bias[ch] + w[kHist] * xv;
    for (int64_t k = 0; k < kHist; ++k) acc += w[k] * window[k];
    out[ch] = FastSilu(acc);
    for (int64_t k = 0; k + 1 < kHist; ++k) st[k] = window[k + 1];
    st[kHist - 1] = xv;
  }
}

}  // namespace

MAMBASERVE_CPU_CLONES void CausalConv1dSilu(const float* x, int64_t ldx, int64_t len,
                                            const float* weight, const float* bias, int64_t k_conv,
                                            float* state, float* out, int64_t ldo, int64_t c_begin,
                                            int64_t c_end) {
  const int64_t hist = k_conv - 1;
  if (len == 1 && k_conv == 4 && bias != nullptr) {  // every released Mamba-1 model
    ConvDecodeStep<3>(x, weight, bias, state, out, c_begin, c_end);
    return;
  }
  if (len == 1) {
    // Decode: the window is the state plus this token; shift the new token into the state.
    for (int64_t ch = c_begin; ch < c_end; ++ch) {
      float* st = state + ch * hist;
      const float* w = weight + ch * k_conv;
      const float xv = x[ch];
      float acc = (bias != nullptr ? bias[ch] : 0.0f) + w[hist] * xv;
      for (int64_t k = 0; k < hist; ++k) acc += w[k] * st[k];
      out[ch] = FastSilu(acc);
      for (int64_t k = 0; k + 1 < hist; ++k) st[k] = st[k + 1];
      st[hist - 1] = xv;
    }
    return;
  }
  // window(t, k) is the input at time t-K+1+k: from the state for the first K-1 steps of the
  // chunk, from x after that.
  auto input = [&](int64_t ch, int64_t time) {  // time in [-hist, len)
    return time < 0 ? state[ch * hist + (hist + time)] : x[time * ldx + ch];
  };
  const int64_t first_from_x = std::min(hist, len);
  for (int64_t t = 0; t < first_from_x; ++t) {
    for (int64_t ch = c_begin; ch < c_end; ++ch) {
      float acc = bias != nullptr ? bias[ch] : 0.0f;
      const float* w = weight + ch * k_conv;
      for (int64_t k = 0; k < k_conv; ++k) acc += w[k] * input(ch, t - hist + k);
      out[t * ldo + ch] = FastSilu(acc);
    }
  }
  // The rest reads only x: time outer, taps next, channels inner, so every access is a contiguous
  // row and the channel loop vectorises (the taps transposed once to [K][channels] for that).
  const int64_t channels = c_end - c_begin;
  thread_local std::vector<float> taps;
  taps.resize(static_cast<size_t>(k_conv * channels));
  for (int64_t i = 0; i < channels; ++i) {
    for (int64_t k = 0; k < k_conv; ++k)
      taps[k * channels + i] = weight[(c_begin + i) * k_conv + k];
  }
  for (int64_t t = first_from_x; t < len; ++t) {
    float* __restrict out_t = out + t * ldo + c_begin;
#pragma omp simd
    for (int64_t i = 0; i < channels; ++i) out_t[i] = bias != nullptr ? bias[c_begin + i] : 0.0f;
    for (int64_t k = 0; k < k_conv; ++k) {
      const float* __restrict x_row = x + (t - hist + k) * ldx + c_begin;
      const float* __restrict tap = taps.data() + k * channels;
#pragma omp simd
      for (int64_t i = 0; i < channels; ++i) out_t[i] += tap[i] * x_row[i];
    }
#pragma omp simd
    for (int64_t i = 0; i < channels; ++i) out_t[i] = FastSilu(out_t[i]);
  }
  // New state: the last K-1 inputs (from the old state when the chunk is shorter than K-1).
  std::vector<float> last(hist);
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    for (int64_t j = 0; j < hist; ++j) last[j] = input(ch, len - hist + j);
    std::memcpy(state + ch * hist, last.data(), hist * sizeof(float));
  }
}

namespace {

typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));

// The sum of 16 floats by halving (v[i] + v[i+8], then +4, +2, +1): log2(16) dependent adds
// instead of the 16-long chain of an in-order reduction, in vector shuffles so it stays in
// registers (as a loop over a local array GCC stored the vector and reloaded single lanes, stalling
// on store forwarding: half of the decode scan's time).
inline float SumOf16(const V16& v) {
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b =
      __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// Sixteen such sums at once, one per lane, with the same additions in the same order: each level
// adds two halves of two vectors' partial sums, so 16 channels cost 15 vector adds and 30 shuffles
// instead of 16 separate reductions of 8 operations each.
//   p[j]: channel j's 16 products  ->  out lane j: SumOf16(p[j])
struct SixteenSums {
  V16 pairs[8];  // pairs[k]: lanes 0-7 channel 2k's 8 partials, lanes 8-15 channel 2k+1's

  // Level 1, as the two channels' products are produced (keeps few vectors live).
  void AddPair(int k, const V16& p0, const V16& p1) {
    pairs[k] =
        __builtin_shufflevector(p0, p1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
        __builtin_shufflevector(p0, p1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30,
                                31);
  }
  // (Results through references: GCC warns that returning a 64-byte vector by value has another
  // ABI in the clones without AVX-512.)
  static void Quad(const V16& a, const V16& b, V16& out) {  // 4 partials for each of 4 channels
    out = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
          __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
  static void Oct(const V16& a, const V16& b, V16& out) {  // 2 partials for each of 8 channels
    out = __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
          __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  void Finish(V16& out) const {
    V16 q[4], o0, o1;
    for (int k = 0; k < 4; ++k) Quad(pairs[2 * k], pairs[2 * k + 1], q[k]);
    Oct(q[0], q[1], o0);
    Oct(q[2], q[3], o1);
    out =
        __builtin_shufflevector(o0, o1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
        __builtin_shufflevector(o0, o1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  }
};

// One token's update of one channel's 16 states; its 16 products h*C in `products`.
inline void ScanProducts16(float* __restrict h, const float* __restrict a,
                           const float* __restrict b, const float* __restrict c, float dt,
                           float dt_x, V16& products) {
  float da[16], prod[16];
#pragma omp simd
  for (int64_t n = 0; n < 16; ++n) da[n] = FastExp(dt * a[n]);
#pragma omp simd
  for (int64_t n = 0; n < 16; ++n) {
    h[n] = da[n] * h[n] + dt_x * b[n];
    prod[n] = h[n] * c[n];
  }
  std::memcpy(&products, prod, sizeof(products));
}

}  // namespace

// Cloned for AVX-512 / AVX2 / baseline and picked at load time.
MAMBASERVE_CPU_CLONES void SelectiveScan(const float* x, const float* dt, const float* b,
                                         const float* c, int64_t ld_bc, const float* a,
                                         const float* d, const float* z, int64_t ldz, int64_t len,
                                         int64_t d_inner, int64_t d_state, float* state, float* y,
                                         int64_t c_begin, int64_t c_end) {
  constexpr int64_t kBlock = 16;  // d_state of every released Mamba-1 model
  // In a decode batch each sequence's state (this thread's channels: 48 KiB per layer at 130m) is
  // read once from memory and written back, and the scan waits on it: asking for the lines 64
  // channels (4 KiB) ahead took 32 streams from 1,290-1,360 to 1,430-1,510 tokens/s (bf16 130m;
  // 32-128 alike, 256 less). Past the thread's range it only touches a neighbour's lines; a
  // prefetch never faults.
  constexpr int64_t kPrefetchChannels = 64;
  // Time outer, channels inner: the rows of x, dt, z are contiguous and this thread's states
  // ([c_end - c_begin][N] floats, tens of KiB) stay in cache across tokens.
  for (int64_t t = 0; t < len; ++t) {
    const float* bt = b + t * ld_bc;
    const float* ct = c + t * ld_bc;
    const float* xt = x + t * d_inner;
    const float* dtt = dt + t * d_inner;
    const float* zt = z + t * ldz;
    float* yt = y + t * d_inner;
    int64_t ch = c_begin;
    if (d_state == kBlock) {
      // Sixteen channels at a time: their sums reduced together (see SixteenSums).
      for (; ch + 16 <= c_end; ch += 16) {
        SixteenSums sums;
        for (int k = 0; k < 8; ++k) {
          V16 p0, p1;
          const int64_t c0 = ch + 2 * k, c1 = c0 + 1;
          __builtin_prefetch(state + (c0 + kPrefetchChannels) * kBlock, 1);
          __builtin_prefetch(state + (c1 + kPrefetchChannels) * kBlock, 1);
          ScanProducts16(state + c0 * kBlock, a + c0 * kBlock, bt, ct, dtt[c0], dtt[c0] * xt[c0],
                         p0);
          ScanProducts16(state + c1 * kBlock, a + c1 * kBlock, bt, ct, dtt[c1], dtt[c1] * xt[c1],
                         p1);
          sums.AddPair(k, p0, p1);
        }
        V16 yv, dv, xv;
        sums.Finish(yv);
        std::memcpy(&dv, d + ch, sizeof(dv));
        std::memcpy(&xv, xt + ch, sizeof(xv));
        const V16 out = yv + dv * xv;
        std::memcpy(yt + ch, &out, sizeof(out));
      }
    }
    for (; ch < c_end; ++ch) {
      float* h = state + ch * d_state;
      const float* a_row = a + ch * d_state;
      const float xv = xt[ch], dtv = dtt[ch];
      float yv = 0.0f;
      int64_t n = 0;
      for (; n + kBlock <= d_state; n += kBlock) {
        V16 products;
        ScanProducts16(h + n, a_row + n, bt + n, ct + n, dtv, dtv * xv, products);
        yv += SumOf16(products);
      }
      for (; n < d_state; ++n) {  // remainder for unusual d_state
        h[n] = FastExp(dtv * a_row[n]) * h[n] + dtv * xv * bt[n];
        yv += h[n] * ct[n];
      }
      yt[ch] = yv + d[ch] * xv;
    }
    // The SiLU(z) gate after the channel loop, where it vectorises (16 exps per instruction
    // sequence instead of one per channel); the same product as gating inside the loop.
#pragma omp simd
    for (int64_t ch = c_begin; ch < c_end; ++ch) yt[ch] *= FastSilu(zt[ch]);
  }
}

MAMBASERVE_CPU_CLONES void SoftplusWithBias(float* dt, const float* bias, int64_t rows,
                                            int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = dt + r * dim;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) row[i] = FastSoftplus(row[i] + bias[i]);
  }
}

}  // namespace mambaserve::cpu
