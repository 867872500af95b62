// The selective scan with dt's bias + softplus fused in, the D skip and the SiLU(z) gate:
//   dt = softplus(dt_raw + dt_bias);  h = exp(dt*A) h + dt*x*B;  y = (h.C + D*x) * silu(z)
// State is fp32 in the slot's portable layout [E][N]; the whole recurrence is fp32. Prefill
// ("context", chunks of any length) and single-token decode ("generation") are separate entry
// points. Element-type instantiations live in selective_scan_{f32,bf16}.cu.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

struct SelectiveScanParams {
  const float* x = nullptr;  // [rows][ld_x] conv output
  int64_t ld_x = 0;
  const float* dt = nullptr;  // [rows][ld_dt] dt_proj output before bias and softplus
  int64_t ld_dt = 0;
  const float* dt_bias = nullptr;  // [E]
  const float* b = nullptr;        // [rows][ld_bc], N values per row
  const float* c = nullptr;        // [rows][ld_bc], N values per row
  int64_t ld_bc = 0;
  const float* z = nullptr;  // [rows][ld_z] gate input (the z half of in_proj's output)
  int64_t ld_z = 0;
  const float* z_bias = nullptr;  // [E] in_proj bias of the z half, or nullptr
  const float* a = nullptr;       // [E][N] = -exp(A_log)
  const float* d = nullptr;       // [E]
  float* ssm_state = nullptr;     // this layer's [E][N] in slot 0; slot s at + s * slot_stride
  int64_t slot_stride = 0;
  ChunkTable chunks;
  void* y = nullptr;  // [rows][ld_y] gated output, in the out_proj GEMM's dtype
  int64_t ld_y = 0;
  GemmType y_type = GemmType::kF32;
  int64_t d_inner = 0;  // E
  int d_state = 0;      // N, at most math::kMaxStateSize
  // Decode only: B and C are read before Falcon-Mamba's weightless RMSNorm, which the kernel
  // applies itself (each over its N values, with bc_eps), saving the norm kernel's launch.
  bool rms_normalize_bc = false;
  float bc_eps = 1e-6f;
};

// In prefill, a chunk of at least this many tokens goes through the chunked parallel scan
// (selective_scan_chunked.cuh: lanes along tokens, a warp scan between them), a shorter one
// through the token-sequential kernel (lanes along the state, which a short chunk keeps busy).
// The choice follows each chunk's own length, never the rest of its pass.
inline constexpr int kChunkedScanMinTokens = 128;

// CPU twin: softplus(dt + bias), then cpu::SelectiveScan per chunk.
LaunchResult InvokeSelectiveScanPrefill(const SelectiveScanParams& params, cudaStream_t stream);

// Every chunk is one token and chunk i is row i (a decode step).
LaunchResult InvokeSelectiveScanUpdate(const SelectiveScanParams& params, cudaStream_t stream);

// Per-type entry points (one translation unit each).
LaunchResult InvokeSelectiveScanPrefillF32(const SelectiveScanParams& params, cudaStream_t stream);
LaunchResult InvokeSelectiveScanPrefillBf16(const SelectiveScanParams& params, cudaStream_t stream);
LaunchResult InvokeSelectiveScanUpdateF32(const SelectiveScanParams& params, cudaStream_t stream);
LaunchResult InvokeSelectiveScanUpdateBf16(const SelectiveScanParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
