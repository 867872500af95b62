// Depthwise causal conv1d + SiLU over the x half of in_proj's output, reading and updating each
// chunk's conv state (the last K-1 pre-conv inputs, fp32, in the slot's portable layout [E][K-1]).
// Prefill ("context") and single-token decode ("generation") are separate entry points.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

struct CausalConv1dParams {
  const float* x = nullptr;  // [rows][ld_x] pre-conv inputs, channel c at column c
  int64_t ld_x = 0;
  const float* x_bias =
      nullptr;  // [E] in_proj bias of the x half (added before the conv), or nullptr
  const float* weight = nullptr;  // [E][K]
  const float* bias = nullptr;    // [E] conv bias, or nullptr
  float* conv_state = nullptr;    // this layer's [E][K-1] in slot 0; slot s at + s * slot_stride
  int64_t slot_stride = 0;        // floats between consecutive slots
  ChunkTable chunks;
  float* out = nullptr;  // [rows][ld_out] fp32 conv output (the scan's x)
  int64_t ld_out = 0;
  void* out_gemm = nullptr;  // [rows][ld_out_gemm] copy for the x_proj GEMM, or nullptr
  int64_t ld_out_gemm = 0;
  GemmType out_gemm_type = GemmType::kF32;
  int64_t d_inner = 0;  // E
  int k_conv = 4;       // K, at most math::kMaxConvWidth
};

// Chunks of any length. CPU twin: cpu::CausalConv1dSilu per chunk.
LaunchResult InvokeCausalConv1dPrefill(const CausalConv1dParams& params, cudaStream_t stream);

// Every chunk is one token and chunk i is row i (a decode step): one thread per (row, channel).
LaunchResult InvokeCausalConv1dUpdate(const CausalConv1dParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
