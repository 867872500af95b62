// y = x · Wᵀ for a handful of tokens (decode batches), without BLAS's packing of W.
//
// A GEMM library packs the weight panel into a cache-friendly layout on every call; with 2-64
// activation rows that copy costs as much as the arithmetic, and at batch 32 it was a quarter of
// the CPU decode step. This kernel instead streams each block of 4 weight rows once from memory
// and multiplies it, from L1, against all tokens in register tiles of 4 rows x 6 tokens.
#pragma once

#include <cstdint>

namespace mambaserve::cpu {

// Largest token count the kernel is used for; beyond it BLAS's packed GEMM wins.
inline constexpr int64_t kSmallBatchMaxTokens = 16;

// True when the CPU supports the AVX-512 kernel.
bool SmallBatchGemmAvailable();

// y[t][r] (row stride ldy) = sum_k x[t][k] (row stride ldx) * w[r][k] (rows of `cols`), for
// t < tokens, r < rows. Requires SmallBatchGemmAvailable().
void SmallBatchGemm(const float* x, int64_t ldx, int64_t tokens, const float* w, int64_t rows,
                    int64_t cols, float* y, int64_t ldy);

}  // namespace mambaserve::cpu
