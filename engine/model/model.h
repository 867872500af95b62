// A loaded checkpoint: validated config plus views of every weight tensor (still memory-mapped).
// Backends convert these views into their own storage once, at start-up.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"

namespace mambaserve {

struct LayerWeights {
  const TensorView* norm = nullptr;           // [D]
  const TensorView* in_proj = nullptr;        // [2E, D]
  const TensorView* in_proj_bias = nullptr;   // [2E] when use_bias
  const TensorView* conv1d = nullptr;         // [E, 1, K]
  const TensorView* conv1d_bias = nullptr;    // [E] when use_conv_bias
  const TensorView* x_proj = nullptr;         // [R + 2N, E]
  const TensorView* dt_proj = nullptr;        // [E, R]
  const TensorView* dt_proj_bias = nullptr;   // [E]
  const TensorView* a_log = nullptr;          // [E, N]
  const TensorView* d = nullptr;              // [E]
  const TensorView* out_proj = nullptr;       // [D, E]
  const TensorView* out_proj_bias = nullptr;  // [D] when use_bias
};

struct Model {
  ModelConfig config;
  std::string dir;
  DType checkpoint_dtype = DType::kF32;    // dtype of the large matrices on disk
  const TensorView* embeddings = nullptr;  // [V, D]
  std::vector<LayerWeights> layers;
  const TensorView* norm_f = nullptr;      // [D]
  const TensorView* lm_head = nullptr;     // [V, D]; == embeddings when tied
  std::unique_ptr<Checkpoint> checkpoint;  // owns the mappings the views point into

  // Hex digest of config + tensor names/shapes/dtypes + a sample of the weight bytes; two replicas
  // of the same checkpoint agree, different checkpoints differ (used to validate session imports).
  std::string fingerprint;
};

struct LoadOptions {
  // Scan every weight for NaN/Inf (one pass over the data; on by default).
  bool check_finite = true;
};

// Loads `dir` (config.json + safetensors). Every required tensor is checked for presence, dtype and
// shape; errors name the file, tensor, expected and actual shape.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& dir,
                                                 const LoadOptions& options = {});

// Returns an error naming the tensor and the first non-finite element's index, if any.
absl::Status CheckFinite(const TensorView& tensor);

}  // namespace mambaserve
