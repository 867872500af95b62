// Y[rows][M] = X[rows][K] · W[M][K]ᵀ for the few rows of a small decode batch, fp32 accumulation.
// At batch 1-8 every GEMM of the model is a weight stream: each warp reads two rows of W once with
// 16-byte loads and serves every batch row from registers; its main loop is branch-free and issues
// the loads of several k-steps (32 weights per column) before their FMAs, so each lane keeps 8-16
// loads in flight. Larger batches go to cuBLAS.
// X is in W's type, as cuBLAS takes it (a row's result does not depend on which of the two
// multiplies it, beyond the order of the fp32 sums), or fp32 that the kernel rounds to W's type
// itself (x_f32).
#pragma once

#include "kernels/causal_conv1d.h"
#include "kernels/kernel_types.h"
#include "kernels/mamba_math.h"

namespace mambaserve::kernels {

inline constexpr int kSkinnyGemmMaxRows = 8;

struct SkinnyGemmParams {
  GemmType type = GemmType::kBF16;  // of W and X
  const void* w = nullptr;          // [m][k] row-major
  const void* x = nullptr;          // [rows][ldx]
  int64_t ldx = 0;
  float* y = nullptr;  // [rows][ldy] fp32
  int64_t ldy = 0;
  int64_t rows = 0;  // 1 .. kSkinnyGemmMaxRows
  int64_t m = 0;
  int64_t k = 0;
  // in_proj of a decode step with the conv fused in: output columns [0, conv.d_inner) are the
  // conv's new inputs, and instead of going to y each one runs the conv's decode update for its
  // (row, channel) (conv.x is unused; conv.out_gemm_type must be `type`). The other columns go to
  // y as usual. Saves the conv's own launch, and the round trip of its input through memory.
  bool fuse_conv = false;
  CausalConv1dParams conv;
  // dt_proj of a decode step without the B/C/dt norm's own launch: X is fp32, and each of its rows
  // is first scaled by its RMS over the k columns when rms_normalize_x (Falcon-Mamba's weightless
  // norm of dt_low, with x_eps), then rounded to `type`: the values the norm kernel would have
  // written, multiplied by the same weights.
  bool x_f32 = false;
  bool rms_normalize_x = false;
  float x_eps = 1e-6f;
  // Split-K across blocks, for thin matrices with a long k (x_proj: 288 columns of 8192): each of
  // k_blocks blocks per column pair takes one k range, writes its sums to `partials`
  // ([k_blocks][rows][m] floats), and the last to finish (counted in `counters`, one per column
  // pair, zero before the launch and left zero after) adds them in a fixed order, so results are
  // the same from run to run.
  int k_blocks = 1;
  float* partials = nullptr;
  unsigned* counters = nullptr;
};

// Whether InvokeSkinnyGemm takes these: 1-8 rows. Any k and alignment (unaligned shapes take a
// scalar path).
inline bool SkinnyGemmSupports(const SkinnyGemmParams& p) {
  return p.rows >= 1 && p.rows <= kSkinnyGemmMaxRows &&
         (!p.fuse_conv || (p.conv.d_inner <= p.m && p.conv.out_gemm_type == p.type &&
                           p.conv.chunks.num_chunks == p.rows && p.conv.k_conv >= 2 &&
                           p.conv.k_conv <= math::kMaxConvWidth)) &&
         (!p.rms_normalize_x || p.x_f32 || p.type == GemmType::kF32) &&
         (p.k_blocks == 1 ||
          (p.k_blocks > 1 && p.partials != nullptr && p.counters != nullptr && !p.fuse_conv));
}

// CPU twin: WeightMatrix::MatMul (engine/cpu/weight_matrix.h). Returns cudaErrorNotSupported
// for parameters SkinnyGemmSupports rejects.
LaunchResult InvokeSkinnyGemm(const SkinnyGemmParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
