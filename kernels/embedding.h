// Embedding gather: the first residual of a pass, fp32 rows of the token embeddings.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

struct EmbeddingParams {
  const void* table = nullptr;  // [V][dim] in `table_type`
  GemmType table_type = GemmType::kF32;
  const int32_t* tokens = nullptr;  // [rows], each < V (validated by the caller)
  float* out = nullptr;             // [rows][dim] fp32 residual
  int64_t rows = 0;
  int64_t dim = 0;
};

// CPU twin: WeightMatrix::RowToF32 per token (engine/cpu/weight_matrix.h).
LaunchResult InvokeEmbedding(const EmbeddingParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
