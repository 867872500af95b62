// Device-side deterministic fills, so benchmarks can build a 7B-shaped model on the GPU without
// generating 14 GB on the host.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

enum class FillKind : int {
  kNormal = 0,     // mean + scale * N(0, 1)
  kUniform = 1,    // mean + scale * U(-1, 1)
  kNegArange = 2,  // -(i % period + 1): S4D-real A = -exp(A_log)
};

struct FillParams {
  void* out = nullptr;
  GemmType type = GemmType::kF32;
  int64_t count = 0;
  FillKind kind = FillKind::kNormal;
  float mean = 0.0f;
  float scale = 1.0f;
  int64_t period = 1;
  uint64_t seed = 0;
};

LaunchResult InvokeFill(const FillParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
