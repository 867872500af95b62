// Y[rows][M] = X[rows][K] · W[M][K]ᵀ for the few rows of a small decode batch, fp32 accumulation.
// At batch 1-8 every GEMM of the model is a weight stream: one warp per output column of W reads
// its row once with 16-byte loads and serves every batch row from registers. Larger batches go to
// cuBLAS.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

inline constexpr int kSkinnyGemmMaxRows = 8;

struct SkinnyGemmParams {
  const void* w = nullptr;  // [m][k] row-major, 16-byte aligned
  const void* x = nullptr;  // [rows][ldx], same element type as w, 16-byte aligned rows
  int64_t ldx = 0;
  float* y = nullptr;  // [rows][ldy] fp32
  int64_t ldy = 0;
  GemmType type = GemmType::kBF16;
  int64_t rows = 0;  // at most kSkinnyGemmMaxRows
  int64_t m = 0;
  int64_t k = 0;
};

// Whether InvokeSkinnyGemm handles these shapes (alignment of k and ldx to the 16-byte vector).
inline bool SkinnyGemmSupports(const SkinnyGemmParams& p) {
  const int64_t vec = p.type == GemmType::kBF16 ? 8 : 4;
  const auto aligned = [](const void* ptr) {
    return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
  };
  return p.rows >= 1 && p.rows <= kSkinnyGemmMaxRows && p.k % vec == 0 && p.ldx % vec == 0 &&
         aligned(p.w) && aligned(p.x);
}

// CPU twin: WeightMatrix::MatMul (engine/cpu/weight_matrix.h). Returns cudaErrorNotSupported
// for shapes SkinnyGemmSupports rejects.
LaunchResult InvokeSkinnyGemm(const SkinnyGemmParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
