// Option resolution shared by every backend (part of mambaserve_model, so the CUDA module, which
// does not link the CPU engine, resolves options exactly as the CPU backend does).
#include "engine/backend/backend.h"

namespace mambaserve {

DType ResolveWeightDType(const Model& model, const BackendOptions& options) {
  if (options.weight_dtype.has_value()) {
    return *options.weight_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32;
  }
  return model.checkpoint_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32;
}

}  // namespace mambaserve
