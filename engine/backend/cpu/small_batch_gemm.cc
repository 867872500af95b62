#include "engine/backend/cpu/small_batch_gemm.h"

#include <immintrin.h>

namespace mambaserve::cpu {
namespace {

// The sum of the 16 lanes, halving the width each step (lanes i and i^8, then ^4, ^2, ^1) — the
// tree _mm512_reduce_add_ps uses. Written with the all-lanes-masked forms of the shuffles: GCC 12's
// unmasked ones (and that macro) pass an undefined register and warn (GCC bug 105593).
__attribute__((target("avx512f"))) inline float SumLanes(__m512 v) {
  constexpr __mmask16 kAll = 0xffff;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, kAll, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, kAll, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, kAll, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, kAll, v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(v);
}

// One tile: kRows weight rows x kTokens tokens, accumulated over all columns in 16-lane vectors
// (the tail of `cols` via a masked load). 4 x 6 = 24 accumulators + 4 weight vectors + 1 token
// vector fit the 32 zmm registers.
template <int kRows, int kTokens>
__attribute__((target("avx512f"))) void Tile(const float* x, int64_t ldx, const float* w,
                                             int64_t cols, float* y, int64_t ldy) {
  __m512 acc[kRows][kTokens];
  for (int i = 0; i < kRows; ++i)
    for (int j = 0; j < kTokens; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < cols; k += 16) {
    const __mmask16 mask = cols - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - k)) - 1);
    __m512 wv[kRows];
    for (int i = 0; i < kRows; ++i) wv[i] = _mm512_maskz_loadu_ps(mask, w + i * cols + k);
    for (int j = 0; j < kTokens; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + j * ldx + k);
      for (int i = 0; i < kRows; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < kRows; ++i)
    for (int j = 0; j < kTokens; ++j) y[j * ldy + i] = SumLanes(acc[i][j]);
}

template <int kRows>
__attribute__((target("avx512f"))) void RowBlock(const float* x, int64_t ldx, int64_t tokens,
                                                 const float* w, int64_t cols, float* y,
                                                 int64_t ldy) {
  int64_t t = 0;
  for (; t + 6 <= tokens; t += 6) Tile<kRows, 6>(x + t * ldx, ldx, w, cols, y + t * ldy, ldy);
  const float* xt = x + t * ldx;
  float* yt = y + t * ldy;
  switch (tokens - t) {
    case 5:
      Tile<kRows, 5>(xt, ldx, w, cols, yt, ldy);
      break;
    case 4:
      Tile<kRows, 4>(xt, ldx, w, cols, yt, ldy);
      break;
    case 3:
      Tile<kRows, 3>(xt, ldx, w, cols, yt, ldy);
      break;
    case 2:
      Tile<kRows, 2>(xt, ldx, w, cols, yt, ldy);
      break;
    case 1:
      Tile<kRows, 1>(xt, ldx, w, cols, yt, ldy);
      break;
    default:
      break;
  }
}

}  // namespace

bool SmallBatchGemmAvailable() { return __builtin_cpu_supports("avx512f"); }

void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const float* w, int64_t rows,
                    int64_t cols, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) RowBlock<4>(x, ldx, tokens, w + r * cols, cols, y + r, ldy);
  for (; r < rows; ++r) RowBlock<1>(x, ldx, tokens, w + r * cols, cols, y + r, ldy);
}

}  // namespace mambaserve::cpu
