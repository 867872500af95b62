// Deterministic random Mamba / Falcon-Mamba checkpoints in the exact Hugging Face layout, with
// Mamba's initialisation. Used for tests, benchmarks and the default model `serve` starts with.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"
#include "engine/model/model_config.h"

namespace mambaserve {

// "tiny" (D 64, 2 layers, V 512), "130m", "370m" and "7b" (Falcon-Mamba-7B's: D 4096, 64 layers,
// V 65024) shapes of the given type.
absl::StatusOr<ModelConfig> PresetConfig(std::string_view preset, ModelType type);

// Writes config.json and model.safetensors into `out_dir` (created if missing). Same config, dtype
// and seed give the same bytes.
absl::Status WriteRandomModel(const ModelConfig& config, DType dtype, uint64_t seed,
                              const std::string& out_dir);

}  // namespace mambaserve
