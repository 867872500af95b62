// y = x · Wᵀ for many tokens (prefill, decode batches beyond small_batch_gemm's) through oneDNN's
// matmul, on the calling thread only.
//
// Why oneDNN: on CPUs with AVX-512 (and AVX-512 BF16 or AMX for bf16) its JIT-generated kernels
// reach the machine's GEMM peak, where Debian's OpenBLAS 0.3.21 does not know recent cores (on a
// Zen 5 EPYC: oneDNN 214 GFLOP/s per core in f32, 440 in bf16; OpenBLAS 55 in f32 and no bf16
// GEMM at all). The weights are read in the panels of weight_panels.h, which is oneDNN's own
// blocked weights format, so it does not reorder them on every call.
//
// The engine's own thread pool splits the rows between threads, each calling this on its slice;
// oneDNN's OpenMP runtime is kept to one thread per caller, so the two never compete for cores.
#pragma once

#include <cstdint>

#include "engine/model/dtype.h"

namespace mambaserve::cpu {

// True when oneDNN has a CPU engine here.
bool OneDnnAvailable();

// y[t][r] (row stride ldy, f32) = sum_k x[t][k] * W[r][k], for t < tokens, r < rows, with x's
// rows dense ([tokens][cols]: oneDNN's optimised kernels take no row stride with these weights)
// and W's `rows` x `cols` weights in the panels of weight_panels.h starting at `panels`. `dtype`
// is that of both x and W: kF32, or kBF16 (x already rounded to bf16). Returns false when oneDNN
// has no optimised kernel for it (only its slow reference one) or failed; the caller then
// computes y another way.
bool OneDnnMatMul(const void* x, int64_t tokens, const void* panels, int64_t rows, int64_t cols,
                  DType dtype, float* y, int64_t ldy);

}  // namespace mambaserve::cpu
