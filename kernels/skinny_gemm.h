// Y[rows][M] = X[rows][K] · W[M][K]ᵀ for the few rows of a small decode batch, fp32 accumulation.
// At batch 1-8 every GEMM of the model is a weight stream: each warp reads two rows of W once with
// 16-byte loads and serves every batch row from registers. Larger batches go to cuBLAS.
//
// Unlike cuBLAS, X may be fp32 with bf16 W: decode steps then multiply bf16 weights by unrounded
// activations (only the weights are rounded, as in the CPU backend).
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

inline constexpr int kSkinnyGemmMaxRows = 8;

struct SkinnyGemmParams {
  const void* w = nullptr;  // [m][k] row-major in w_type
  GemmType w_type = GemmType::kBF16;
  const void* x = nullptr;  // [rows][ldx] in x_type (kF32, or w_type)
  GemmType x_type = GemmType::kBF16;
  int64_t ldx = 0;
  float* y = nullptr;  // [rows][ldy] fp32
  int64_t ldy = 0;
  int64_t rows = 0;  // 1 .. kSkinnyGemmMaxRows
  int64_t m = 0;
  int64_t k = 0;
};

// Whether InvokeSkinnyGemm takes these: 1-8 rows and a supported type pair (f32·f32, bf16·bf16,
// bf16 weights · f32 activations). Any k and alignment (unaligned shapes take a scalar path).
inline bool SkinnyGemmSupports(const SkinnyGemmParams& p) {
  return p.rows >= 1 && p.rows <= kSkinnyGemmMaxRows &&
         (p.x_type == p.w_type || (p.w_type == GemmType::kBF16 && p.x_type == GemmType::kF32));
}

// CPU twin: WeightMatrix::MatMul (engine/cpu/weight_matrix.h). Returns cudaErrorNotSupported
// for parameters SkinnyGemmSupports rejects.
LaunchResult InvokeSkinnyGemm(const SkinnyGemmParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
