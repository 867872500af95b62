// The entry point of libmambaserve_cuda.so (see engine/cuda_module.h): the only exported symbol.
#include "engine/backend/cuda_module.h"

#include <exception>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/cuda_status.h"

extern "C" __attribute__((visibility("default"))) mambaserve::CudaCreateResult
mambaserve_create_cuda_backend(const std::shared_ptr<const mambaserve::Model>* model,
                               const mambaserve::BackendOptions* options,
                               mambaserve::Backend** backend, std::string* error) {
  using mambaserve::CudaCreateResult;
  try {
    absl::StatusOr<int> devices = mambaserve::cuda::CudaDeviceCount();
    if (!devices.ok()) {
      *error = std::string(devices.status().message());
      return CudaCreateResult::kNoDevice;
    }
    auto created = mambaserve::CudaBackend::Create(*model, *options);
    if (!created.ok()) {
      *error = std::string(created.status().message());
      return CudaCreateResult::kError;
    }
    *backend = created->release();
    return CudaCreateResult::kOk;
  } catch (const std::exception& e) {
    *error = absl::StrCat("CUDA backend creation failed: ", e.what());
    return CudaCreateResult::kError;
  }
}

static_assert(
    std::is_same_v<decltype(&mambaserve_create_cuda_backend), mambaserve::CreateCudaBackendFn>,
    "entry point must match CreateCudaBackendFn");
