#include "engine/backend_factory.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cuda_module.h"

namespace mambaserve {
namespace {

// The module is looked for in $MAMBASERVE_CUDA_MODULE, next to the executable, then on the
// loader's search path.
std::vector<std::string> CudaModuleCandidates() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MAMBASERVE_CUDA_MODULE"); env != nullptr && *env) {
    candidates.push_back(env);
  }
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back((exe.parent_path() / kCudaModuleFile).string());
    candidates.push_back((exe.parent_path().parent_path() / "kernels" / kCudaModuleFile).string());
    candidates.push_back((exe.parent_path().parent_path() / "lib" / kCudaModuleFile).string());
  }
  candidates.push_back(kCudaModuleFile);
  return candidates;
}

struct CudaAttempt {
  CudaCreateResult result = CudaCreateResult::kNoDevice;
  std::unique_ptr<Backend> backend;
  std::string message;
};

CudaAttempt TryCudaBackend(std::shared_ptr<const Model> model, const BackendOptions& options) {
  CudaAttempt attempt;
  std::string load_errors;
  void* handle = nullptr;
  for (const std::string& path : CudaModuleCandidates()) {
    if (path.find('/') != std::string::npos && !std::filesystem::exists(path)) continue;
    // RTLD_LOCAL keeps cudart/cuBLAS symbols out of the server's namespace. The handle is never
    // closed: CUDA runtimes do not support being unloaded while the process lives.
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    absl::StrAppend(&load_errors, load_errors.empty() ? "" : "; ", dlerror());
  }
  if (handle == nullptr) {
    attempt.message = absl::StrCat("CUDA backend module ", kCudaModuleFile, " not available",
                                   load_errors.empty() ? "" : absl::StrCat(" (", load_errors, ")"));
    return attempt;
  }
  auto create = reinterpret_cast<CreateCudaBackendFn>(dlsym(handle, kCudaModuleEntry));
  if (create == nullptr) {
    attempt.result = CudaCreateResult::kError;
    attempt.message = absl::StrCat(kCudaModuleFile, " has no entry point ", kCudaModuleEntry);
    return attempt;
  }
  Backend* backend = nullptr;
  attempt.result = create(&model, &options, &backend, &attempt.message);
  attempt.backend.reset(backend);
  return attempt;
}

}  // namespace

absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "auto") return BackendKind::kAuto;
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend \"", std::string(name), "\" (expected auto, cpu or cuda)"));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Model> model,
                                                       const BackendOptions& options) {
  return CreateBackend(std::move(model), options, nullptr);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Model> model,
                                                       const BackendOptions& options,
                                                       std::string* fallback_reason) {
  if (fallback_reason != nullptr) fallback_reason->clear();
  if (options.kind != BackendKind::kCpu) {
    CudaAttempt cuda = TryCudaBackend(model, options);
    if (cuda.result == CudaCreateResult::kOk) return std::move(cuda.backend);
    if (cuda.result == CudaCreateResult::kError || options.kind == BackendKind::kCuda) {
      // The backend's own errors already say where they come from.
      return absl::FailedPreconditionError(absl::StartsWith(cuda.message, "CUDA backend")
                                               ? cuda.message
                                               : absl::StrCat("CUDA backend: ", cuda.message));
    }
    if (fallback_reason != nullptr) *fallback_reason = cuda.message;
  }
  auto cpu = CpuBackend::Create(std::move(model), options);
  if (!cpu.ok()) return cpu.status();
  return std::unique_ptr<Backend>(std::move(*cpu));
}

}  // namespace mambaserve
