#include "engine/backend/cpu/small_batch_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <utility>

// Everything up to the pop is compiled for AVX-512 (lambdas included, which a per-function target
// attribute would not reach); it runs only after SmallBatchGemmAvailable() said the CPU has it.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")
#endif

namespace mambaserve::cpu {
namespace {

// The sum of the 16 lanes, halving the width each step (lanes i and i^8, then ^4, ^2, ^1) — the
// tree _mm512_reduce_add_ps uses. Written with the all-lanes-masked forms of the shuffles: GCC 12's
// unmasked ones (and that macro) pass an undefined register and warn (GCC bug 105593).
inline float SumLanes(__m512 v) {
  constexpr __mmask16 kAll = 0xffff;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, kAll, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, kAll, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, kAll, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, kAll, v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(v);
}

// 16 weights from w as f32 lanes (lanes outside `mask` are zero and not read). The bf16 widening
// uses the zero-masking forms for the same GCC bug.
inline __m512 LoadWeights(const float* w, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, w); }
inline __m512 LoadWeights(const uint16_t* w, __mmask16 mask) {
  const __m512i widened = _mm512_maskz_cvtepu16_epi32(mask, _mm256_maskz_loadu_epi16(mask, w));
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(mask, widened, 16));
}

// Calls f(std::integral_constant<int, I>()) for I = 0 .. N-1, unrolled at compile time, so that
// every accumulator index below is a constant and GCC keeps the accumulators in registers (with
// runtime loop indices it kept them on the stack, storing each one every iteration).
template <int N, typename F>
inline void Unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>()), ...); }
  (std::make_integer_sequence<int, N>());
}

// acc[i][j] += w[i][k..k+16) · x[j][k..k+16), lanes outside `mask` left out.
template <int kRows, int kTokens, typename W>
inline void MultiplyAdd(const float* x, int64_t ldx, const W* w, int64_t cols, int64_t k,
                        __mmask16 mask, __m512 (&acc)[kRows][kTokens]) {
  __m512 wv[kRows];
  Unroll<kRows>([&](auto i) { wv[i] = LoadWeights(w + i * cols + k, mask); });
  Unroll<kTokens>([&](auto j) {
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + j * ldx + k);
    Unroll<kRows>([&](auto i) { acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]); });
  });
}

// One tile: kRows weight rows x kTokens tokens, accumulated over all columns in 16-lane vectors,
// the tail of `cols` by masked loads after the loop. 4 x 6 = 24 accumulators + 4 weight vectors +
// 1 token vector fit the 32 zmm registers.
//
// The tile's rows are read as kRows interleaved streams, which the hardware prefetchers follow
// poorly while the FMAs keep the core busy; when `prefetch` is set, each step also asks for the
// next kRows * 16 weights of the following block (one block ahead, into L2), so its bytes are on
// their way while this one is multiplied (bf16, 8 tokens: 2x the bytes per second here).
template <int kRows, int kTokens, typename W>
void Tile(const float* x, int64_t ldx, const W* w, int64_t cols, float* y, int64_t ldy,
          const char* prefetch) {
  constexpr int kLinesPerStep = std::max<int>(1, kRows * 16 * sizeof(W) / 64);
  __m512 acc[kRows][kTokens];
  Unroll<kRows>([&](auto i) { Unroll<kTokens>([&](auto j) { acc[i][j] = _mm512_setzero_ps(); }); });
  int64_t k = 0;
  for (; k + 16 <= cols; k += 16) {
    if (prefetch != nullptr) {
      Unroll<kLinesPerStep>([&](auto l) { _mm_prefetch(prefetch + l * 64, _MM_HINT_T1); });
      prefetch += kLinesPerStep * 64;
    }
    MultiplyAdd(x, ldx, w, cols, k, __mmask16(0xffff), acc);
  }
  if (k < cols) MultiplyAdd(x, ldx, w, cols, k, __mmask16((1u << (cols - k)) - 1), acc);
  Unroll<kRows>(
      [&](auto i) { Unroll<kTokens>([&](auto j) { y[j * ldy + i] = SumLanes(acc[i][j]); }); });
}

// All tokens against kRows rows, in tiles of up to 6 tokens; the first tile streams the rows from
// memory (and prefetches the next block), the others find them in L1.
template <int kRows, typename W>
void RowBlock(const float* x, int64_t ldx, int64_t tokens, const W* w, int64_t cols, float* y,
              int64_t ldy) {
  const char* prefetch = reinterpret_cast<const char*>(w + kRows * cols);
  int64_t t = 0;
  for (; t + 6 <= tokens; t += 6) {
    Tile<kRows, 6>(x + t * ldx, ldx, w, cols, y + t * ldy, ldy, t == 0 ? prefetch : nullptr);
  }
  const float* xt = x + t * ldx;
  float* yt = y + t * ldy;
  if (t > 0) prefetch = nullptr;
  switch (tokens - t) {
    case 5:
      Tile<kRows, 5>(xt, ldx, w, cols, yt, ldy, prefetch);
      break;
    case 4:
      Tile<kRows, 4>(xt, ldx, w, cols, yt, ldy, prefetch);
      break;
    case 3:
      Tile<kRows, 3>(xt, ldx, w, cols, yt, ldy, prefetch);
      break;
    case 2:
      Tile<kRows, 2>(xt, ldx, w, cols, yt, ldy, prefetch);
      break;
    case 1:
      Tile<kRows, 1>(xt, ldx, w, cols, yt, ldy, prefetch);
      break;
    default:
      break;
  }
}

// One token: each row front to back, so the weights are read as one sequential stream, which the
// hardware prefetchers follow best (interleaving 8 rows' streams read bf16 weights at half the
// rate here); 4 accumulators over consecutive vectors keep the FMAs independent.
template <typename W>
void MatVec(const float* x, const W* w, int64_t rows, int64_t cols, float* y) {
  constexpr int kAccumulators = 4;
  for (int64_t r = 0; r < rows; ++r) {
    const W* row = w + r * cols;
    __m512 acc[kAccumulators];
    Unroll<kAccumulators>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
    int64_t k = 0;
    for (; k + 16 * kAccumulators <= cols; k += 16 * kAccumulators) {
      Unroll<kAccumulators>([&](auto i) {
        acc[i] = _mm512_fmadd_ps(LoadWeights(row + k + 16 * i, __mmask16(0xffff)),
                                 _mm512_loadu_ps(x + k + 16 * i), acc[i]);
      });
    }
    for (; k < cols; k += 16) {
      const __mmask16 mask = cols - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - k)) - 1);
      acc[0] =
          _mm512_fmadd_ps(LoadWeights(row + k, mask), _mm512_maskz_loadu_ps(mask, x + k), acc[0]);
    }
    Unroll<kAccumulators - 1>([&](auto i) { acc[0] = _mm512_add_ps(acc[0], acc[i + 1]); });
    y[r] = SumLanes(acc[0]);
  }
}

template <typename W>
void Gemm(const float* x, int64_t ldx, int64_t tokens, const W* w, int64_t rows, int64_t cols,
          float* y, int64_t ldy) {
  if (tokens == 1) {
    MatVec(x, w, rows, cols, y);
    return;
  }
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) RowBlock<4>(x, ldx, tokens, w + r * cols, cols, y + r, ldy);
  for (; r < rows; ++r) RowBlock<1>(x, ldx, tokens, w + r * cols, cols, y + r, ldy);
}

}  // namespace

void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const float* w, int64_t rows,
                    int64_t cols, float* y, int64_t ldy) {
  Gemm(x, ldx, tokens, w, rows, cols, y, ldy);
}

void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const uint16_t* w, int64_t rows,
                    int64_t cols, float* y, int64_t ldy) {
  Gemm(x, ldx, tokens, w, rows, cols, y, ldy);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

bool SmallBatchGemmAvailable() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

}  // namespace mambaserve::cpu
