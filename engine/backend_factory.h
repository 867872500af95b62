// Picks and creates the backend: the one place that decides between the CUDA module and the CPU.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace mambaserve {

// Creates the backend `options.kind` asks for. kAuto tries the CUDA module (libmambaserve_cuda.so,
// loaded at run time) and falls back to the CPU when it or a GPU is missing.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Model> model,
                                                       const BackendOptions& options);
// As above; when kAuto falls back to the CPU, *fallback_reason says why the CUDA backend was not
// used (module missing, no driver, no GPU). Left empty otherwise.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Model> model,
                                                       const BackendOptions& options,
                                                       std::string* fallback_reason);

}  // namespace mambaserve
