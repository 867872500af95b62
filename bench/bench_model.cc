#include "bench/bench_model.h"

#include <filesystem>
#include <iostream>

#include "engine/base/status_macros.h"
#include "engine/testing/random_model.h"

namespace mambaserve {

absl::StatusOr<BenchModel> EnsureBenchModel(const std::string& preset,
                                            const std::string& model_dir) {
  BenchModel model;
  model.dir =
      !model_dir.empty()
          ? model_dir
          : (std::filesystem::temp_directory_path() / ("mambaserve-bench-" + preset)).string();
  ASSIGN_OR_RETURN(model.config, PresetConfig(preset, ModelType::kMamba));
  if (!std::filesystem::exists(model.dir + "/model.safetensors")) {
    std::cerr << "writing " << preset << " model to " << model.dir << "\n";
    RETURN_IF_ERROR(WriteRandomModel(model.config, DType::kF32, 1, model.dir));
  }
  return model;
}

}  // namespace mambaserve
