// Greedy token selection on the device: the argmax of each logits row, so a greedy decode step
// copies back one int32 per sequence instead of a vocabulary-sized row.
#pragma once

#include "kernels/kernel_types.h"

namespace mambaserve::kernels {

struct ArgMaxParams {
  const float* logits = nullptr;  // [rows][ld], the first `cols` of each row are read
  int64_t rows = 0;
  int64_t cols = 0;  // vocab_size
  int64_t ld = 0;
  int32_t* out = nullptr;  // [rows]
};

// out[r] = the row's argmax, or math::kNonFiniteRow when the row holds a NaN or an infinity.
// CPU twin: GreedyToken (engine/backend/greedy.h); both order candidates by math::ArgMaxPrefers.
LaunchResult InvokeArgMax(const ArgMaxParams& params, cudaStream_t stream);

}  // namespace mambaserve::kernels
