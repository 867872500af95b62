// Writes a safetensors file tensor by tensor, so a multi-gigabyte model never sits in memory whole.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/dtype.h"

namespace mambaserve {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Writes `tensors` (in the given order) to `path` in `dtype`. fill(i, out) produces tensor i's
// values as f32 (out has numel elements); they are rounded to `dtype` on the way out.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                              DType dtype,
                              const std::function<void(size_t, std::span<float>)>& fill);

}  // namespace mambaserve
