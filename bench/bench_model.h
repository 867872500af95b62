// The random checkpoint a CPU benchmark runs on: a preset shape (tiny, 130m, 370m), f32, seed 1,
// written once and reused by every benchmark that names the same directory.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace mambaserve {

struct BenchModel {
  std::string dir;
  ModelConfig config;
};

// `model_dir`, else <temp>/mambaserve-bench-<preset>; the model is written there (with a line on
// stderr) unless it already is.
absl::StatusOr<BenchModel> EnsureBenchModel(const std::string& preset,
                                            const std::string& model_dir);

}  // namespace mambaserve
