// Types shared by the CUDA kernel launchers. Plain C++: server code and tests include the launcher
// headers without nvcc (cudaStream_t is declared opaquely, exactly as cuda_runtime_api.h does).
#pragma once

#include <cstdint>

typedef struct CUstream_st* cudaStream_t;

namespace mambaserve::kernels {

// Element type of the GEMM operands (weights, and the activations fed to a GEMM). Everything else
// (residual, state, recurrence, GEMM outputs) is fp32. f16 checkpoints are held as f32: fp16
// activations overflow in the scan output.
enum class GemmType : int { kF32 = 0, kBF16 = 1 };

inline int GemmTypeSize(GemmType t) { return t == GemmType::kF32 ? 4 : 2; }

// The chunks of a packed pass. A chunk is a run of consecutive tokens of one sequence occupying
// rows [row_begin, row_begin + len) of every [rows][...] activation; each chunk reads and updates
// one state slot. Device pointers, num_chunks entries each.
struct ChunkTable {
  const int32_t* row_begin = nullptr;
  const int32_t* len = nullptr;
  const int32_t* slot =
      nullptr;  // state slot; -1 marks a padding row (state neither read nor written)
  const int32_t* fresh = nullptr;  // 1: the sequence starts here, its previous state counts as zero
  int num_chunks = 0;
  // The longest chunk's len, known on the host (0 where the caller does not say): lets a
  // launcher skip a kernel that no chunk of the pass needs.
  int max_len = 0;
};

// Launchers return the cudaError_t of the launch as an int: 0 (cudaSuccess) or the error code.
using LaunchResult = int;

}  // namespace mambaserve::kernels
