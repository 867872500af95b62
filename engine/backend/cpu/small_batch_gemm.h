// y = x · Wᵀ for a handful of tokens (decode batches) over one 64-row panel of weights in the
// layout of weight_panels.h, without a GEMM library, for f32 and bf16 weights.
//
// Each column's 64 panel weights are four vectors of 16 output rows, each multiplied by the
// token's activation broadcast to all lanes: no horizontal sums, and the panel is read front to
// back as one sequential stream, which the hardware prefetchers follow best. Tiles of up to 6
// tokens keep 4 x 6 accumulators in registers; the first tile streams the panel from memory, the
// others find it in L2.
//
// bf16 weights are widened to f32 in registers (a bf16 is the top half of an f32, so widening is a
// shift or a mask, and exact): memory traffic is half that of f32 weights, which is what decode is
// bound by, and the products and sums are the same f32 ones as for f32 weights, so batch-1 results
// are those of the f32 arithmetic on the bf16 values. (AVX-512 BF16's dot product would also round
// the activations; oneDNN uses it from kSmallBatchMaxTokens on, where the FMA rate starts to
// count.)
#pragma once

#include <cstdint>

#include "engine/model/dtype.h"

namespace mambaserve::cpu {

// Largest token count the kernel is used for, by the weights' dtype; beyond it oneDNN's kernels
// (on the same panels) win. bf16 from 9 tokens: oneDNN's bf16 dot products do twice the FMAs per
// instruction that widening to f32 allows. f32 from 33: the same FMA rate, and oneDNN blocks the
// tokens better for its cache use.
inline constexpr int64_t kSmallBatchMaxTokens = 32;
inline constexpr int64_t SmallBatchMaxTokens(DType weights) {
  return weights == DType::kBF16 ? 8 : kSmallBatchMaxTokens;
}

// True when the CPU supports the AVX-512 kernel (F, BW and VL: every AVX-512 CPU since 2017).
bool SmallBatchGemmAvailable();

// y[t][r] (row stride ldy) = sum_k x[t][k] (row stride ldx) * W[r][k], for t < tokens and the
// panel's first `rows` (<= 64) rows; `panel` is one panel of weight_panels.h's layout with `cols`
// real columns (columns past `cols` are neither read from x nor used). Requires
// SmallBatchGemmAvailable().
void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const float* panel, int64_t cols,
                    int64_t rows, float* y, int64_t ldy);
// The same with the panel in bfloat16 (the upper 16 bits of each f32).
void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const uint16_t* panel,
                    int64_t cols, int64_t rows, float* y, int64_t ldy);

}  // namespace mambaserve::cpu
