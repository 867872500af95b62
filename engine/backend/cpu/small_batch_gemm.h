// y = x · Wᵀ for a handful of tokens (decode batches), without BLAS, for f32 and bf16 weights.
//
// A GEMM library packs the weight panel into a cache-friendly layout on every call; with 2-16
// activation rows that copy costs as much as the arithmetic, and at batch 32 it was a quarter of
// the CPU decode step. This kernel instead streams each weight once from memory: one token reads
// every row front to back (a single sequential stream); more tokens multiply each block of 4 rows,
// from L1, against all of them in register tiles (4 rows x 6 tokens) while the next block is
// prefetched.
//
// bf16 weights are widened to f32 in registers (a bf16 is the top half of an f32, so widening is a
// 16-bit shift and exact): memory traffic is half that of f32 weights, which is what decode is
// bound by, and the products and sums are the same f32 ones as for f32 weights. (AVX-512 BF16's
// dot product would also round the activations to bf16; it saves ALU work decode does not lack.)
#pragma once

#include <cstdint>

#include "engine/model/dtype.h"

namespace mambaserve::cpu {

// Largest token count the kernel is used for, by the weights' dtype; beyond it a GEMM library's
// packed kernels win. bf16 from 17 tokens: oneDNN's bf16 dot products do twice the FMAs per
// instruction that widening to f32 allows. f32 from 33: the same FMA rate, and up to 32 tokens
// oneDNN's packing of the weights on every call costs more than it saves (130m shape, 32 streams:
// 448-451 tokens/s here, 342-350 through oneDNN).
inline constexpr int64_t kSmallBatchMaxTokens = 32;
inline constexpr int64_t SmallBatchMaxTokens(DType weights) {
  return weights == DType::kBF16 ? 16 : kSmallBatchMaxTokens;
}

// True when the CPU supports the AVX-512 kernel (F, BW and VL: every AVX-512 CPU since 2017).
bool SmallBatchGemmAvailable();

// y[t][r] (row stride ldy) = sum_k x[t][k] (row stride ldx) * w[r][k] (rows of `cols`), for
// t < tokens, r < rows. Requires SmallBatchGemmAvailable().
void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const float* w, int64_t rows,
                    int64_t cols, float* y, int64_t ldy);
// The same with w in bfloat16 (the upper 16 bits of each f32).
void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const uint16_t* w, int64_t rows,
                    int64_t cols, float* y, int64_t ldy);

}  // namespace mambaserve::cpu
