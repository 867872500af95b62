// y = x · Wᵀ for many tokens (prefill, decode batches beyond small_batch_gemm's) through oneDNN's
// matmul, on the calling thread only.
//
// Why oneDNN: on CPUs with AVX-512 (and AVX-512 BF16 or AMX for bf16) its JIT-generated kernels
// reach the machine's GEMM peak, where Debian's OpenBLAS 0.3.21 does not know recent cores (on a
// Zen 5 EPYC: oneDNN 214 GFLOP/s per core in f32, 440 in bf16; OpenBLAS 55 in f32 and no bf16
// GEMM at all). The weights are used in place in their stored [rows][cols] layout (no reordered
// copy), so resident memory still holds them once.
//
// The engine's own thread pool splits the rows between threads, each calling this on its slice;
// oneDNN's OpenMP runtime is kept to one thread per caller, so the two never compete for cores.
#pragma once

#include <cstdint>

#include "engine/model/dtype.h"

namespace mambaserve::cpu {

// True when oneDNN has a CPU engine here.
bool OneDnnAvailable();

// y[t][r] (row stride ldy, f32) = sum_k x[t][k] (row stride ldx) * w[r][k] (rows of `cols`), for
// t < tokens, r < rows. `dtype` is that of both x and w: kF32, or kBF16 (x already rounded to
// bf16). Returns false when oneDNN has no kernel for it or failed (the caller then computes y with
// OpenBLAS).
bool OneDnnMatMul(const void* x, int64_t ldx, int64_t tokens, const void* w, int64_t rows,
                  int64_t cols, DType dtype, float* y, int64_t ldy);

}  // namespace mambaserve::cpu
