#include "engine/backend/cpu/small_batch_gemm.h"

#include <immintrin.h>

#include <utility>

#include "engine/backend/cpu/weight_panels.h"

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

constexpr int kVectors = WeightPanels::kPanelRows / 16;  // 16-row vectors per panel column
constexpr int kMaxTileTokens = 6;  // 4 x 6 accumulators + 4-6 weight vectors fit 32 registers
constexpr __mmask16 kAll = 0xffff;

// Calls f(std::integral_constant<int, I>()) for I = 0 .. N-1, unrolled at compile time, so that
// every accumulator index below is a constant and GCC keeps the accumulators in registers (with
// runtime loop indices it kept them on the stack, storing each one every iteration).
template <int N, typename F>
inline void Unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>()), ...); }
  (std::make_integer_sequence<int, N>());
}

// With few tokens the accumulators alone are too few independent FMA chains to hide the FMA
// latency, so two sets take alternate columns and are added at the end.
template <int kTokens>
constexpr int kSets = kTokens <= 3 ? 2 : 1;

template <int kTokens>
using Accumulators = __m512[kSets<kTokens>][kVectors][kTokens];

// The panel's first `rows` outputs of each token: acc summed over its sets, written 16 at a time.
template <int kTokens>
inline void Store(Accumulators<kTokens>& acc, int64_t rows, float* y, int64_t ldy) {
  Unroll<kVectors>([&](auto i) {
    const int64_t left = rows - 16 * i;
    if (left <= 0) return;
    const __mmask16 mask = left >= 16 ? kAll : __mmask16((1u << left) - 1);
    Unroll<kTokens>([&](auto t) {
      __m512 sum = acc[0][i][t];
      if constexpr (kSets<kTokens> == 2) sum = _mm512_add_ps(sum, acc[1][i][t]);
      _mm512_mask_storeu_ps(y + t * ldy + 16 * i, mask, sum);
    });
  });
}

template <int kTokens>
inline void Zero(Accumulators<kTokens>& acc) {
  Unroll<kSets<kTokens>>([&](auto s) {
    Unroll<kVectors>(
        [&](auto i) { Unroll<kTokens>([&](auto t) { acc[s][i][t] = _mm512_setzero_ps(); }); });
  });
}

// Column k's 64 weights: four vectors of 16 rows.
struct Column {
  __m512 v[kVectors];
};
inline Column LoadColumn(const float* panel, int64_t k) {
  Column c;
  Unroll<kVectors>(
      [&](auto i) { c.v[i] = _mm512_loadu_ps(panel + k * WeightPanels::kPanelRows + 16 * i); });
  return c;
}

// acc[s] += column k's 64 weights times each token's x[t][k].
template <int kTokens, int kSet>
inline void MultiplyColumn(const Column& w, const float* x, int64_t ldx, int64_t k,
                           Accumulators<kTokens>& acc) {
  Unroll<kTokens>([&](auto t) {
    const __m512 xt = _mm512_set1_ps(x[t * ldx + k]);
    Unroll<kVectors>(
        [&](auto i) { acc[kSet][i][t] = _mm512_fmadd_ps(w.v[i], xt, acc[kSet][i][t]); });
  });
}

// flatten: every Unroll lambda inlined (outlined, the accumulators went through memory).
template <int kTokens>
[[gnu::flatten]] void Tile(const float* x, int64_t ldx, const float* panel, int64_t cols,
                           int64_t rows, float* y, int64_t ldy) {
  Accumulators<kTokens> acc;
  Zero<kTokens>(acc);
  constexpr int kStep = kSets<kTokens>;
  int64_t k = 0;
  for (; k + kStep <= cols; k += kStep) {
    Unroll<kStep>(
        [&](auto s) { MultiplyColumn<kTokens, s>(LoadColumn(panel, k + s), x, ldx, k + s, acc); });
  }
  for (; k < cols; ++k) MultiplyColumn<kTokens, 0>(LoadColumn(panel, k), x, ldx, k, acc);
  Store<kTokens>(acc, rows, y, ldy);
}

// bf16: each 32-bit lane of a loaded vector holds one row's weights for columns k (low half) and
// k + 1 (high half); shifting the low half up, or masking the high half, gives each as an f32.
template <int kTokens>
[[gnu::flatten]] void Tile(const float* x, int64_t ldx, const uint16_t* panel, int64_t cols,
                           int64_t rows, float* y, int64_t ldy) {
  Accumulators<kTokens> acc;
  Zero<kTokens>(acc);
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  // One pair of columns; `odd` is false for a last, unpaired column (its partner is padding, and
  // x has no value there to multiply it by).
  auto pair = [&](int64_t k, bool odd) {
    const uint16_t* w = panel + k * WeightPanels::kPanelRows;
    Column even_w, odd_w;
    Unroll<kVectors>([&](auto i) {
      const __m512i v = _mm512_loadu_si512(w + 32 * i);
      even_w.v[i] = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, v, 16));
      odd_w.v[i] = _mm512_castsi512_ps(_mm512_maskz_and_epi32(kAll, v, high_half));
    });
    MultiplyColumn<kTokens, 0>(even_w, x, ldx, k, acc);
    if (odd) MultiplyColumn<kTokens, kSets<kTokens> - 1>(odd_w, x, ldx, k + 1, acc);
  };
  int64_t k = 0;
  for (; k + 2 <= cols; k += 2) pair(k, true);
  if (k < cols) pair(k, false);
  Store<kTokens>(acc, rows, y, ldy);
}

template <typename W>
void Gemm(const float* x, int64_t ldx, int64_t tokens, const W* panel, int64_t cols, int64_t rows,
          float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + kMaxTileTokens <= tokens; t += kMaxTileTokens) {
    Tile<kMaxTileTokens>(x + t * ldx, ldx, panel, cols, rows, y + t * ldy, ldy);
  }
  const float* xt = x + t * ldx;
  float* yt = y + t * ldy;
  switch (tokens - t) {
    case 5:
      Tile<5>(xt, ldx, panel, cols, rows, yt, ldy);
      break;
    case 4:
      Tile<4>(xt, ldx, panel, cols, rows, yt, ldy);
      break;
    case 3:
      Tile<3>(xt, ldx, panel, cols, rows, yt, ldy);
      break;
    case 2:
      Tile<2>(xt, ldx, panel, cols, rows, yt, ldy);
      break;
    case 1:
      Tile<1>(xt, ldx, panel, cols, rows, yt, ldy);
      break;
    default:
      break;
  }
}

}  // namespace

void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const float* panel, int64_t cols,
                    int64_t rows, float* y, int64_t ldy) {
  Gemm(x, ldx, tokens, panel, cols, rows, y, ldy);
}

void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const uint16_t* panel,
                    int64_t cols, int64_t rows, float* y, int64_t ldy) {
  Gemm(x, ldx, tokens, panel, cols, rows, y, ldy);
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
