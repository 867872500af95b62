// The boundary between the server and the CUDA backend module (libmambaserve_cuda.so). The module
// is loaded with dlopen at run time so the server binary links neither cudart nor cuBLAS.
#pragma once

#include <memory>
#include <string>

#include "engine/backend/backend.h"

namespace mambaserve {

inline constexpr char kCudaModuleFile[] = "libmambaserve_cuda.so";
inline constexpr char kCudaModuleEntry[] = "mambaserve_create_cuda_backend";

enum class CudaCreateResult : int { kOk = 0, kNoDevice = 1, kError = 2 };

// Signature of the module's entry point. On kOk, *backend receives a new Backend (the caller owns
// it); otherwise *error says why. kNoDevice means "no usable GPU here" (auto mode falls back to
// the CPU); kError is a real failure (out of memory, bad weights) that must be reported.
using CreateCudaBackendFn = CudaCreateResult (*)(const std::shared_ptr<const Model>* model,
                                                 const BackendOptions* options, Backend** backend,
                                                 std::string* error);

}  // namespace mambaserve
