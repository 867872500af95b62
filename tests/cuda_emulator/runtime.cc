// The CUDA runtime entry points CudaBackend, the kernels and the tests call, implemented on the
// emulated device. Linked instead of libcudart; signatures come from the real cuda_runtime_api.h.
#include <cuda_runtime.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "tests/cuda_emulator/emulated_device.h"

namespace emu = mambaserve::cuda_emulator;

struct CUgraph_st {
  std::vector<emu::Operation> operations;
};
struct CUgraphExec_st {
  std::vector<emu::Operation> operations;
};

namespace {

// Checks that a copy's device side(s) lie inside device allocations, as the kind promises.
cudaError_t CheckCopy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                      const char* what) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost) return cudaSuccess;
  if ((dst_device && !emu::IsDeviceRange(dst, bytes)) ||
      (src_device && !emu::IsDeviceRange(src, bytes)) ||
      (!dst_device && emu::IsDeviceRange(dst, 1)) || (!src_device && emu::IsDeviceRange(src, 1))) {
    emu::Complain(std::string(what) + " of " + std::to_string(bytes) +
                  " bytes: a pointer is not where the copy kind says (device range overrun, or "
                  "host and device swapped)");
    return emu::SetLastError(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

struct PinnedHost {
  std::mutex mu;
  std::vector<void*> blocks;
};

PinnedHost& Pinned() {
  static auto* pinned = new PinnedHost;
  return *pinned;
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : emu::SetLastError(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return emu::SetLastError(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::strncpy(prop->name, "CUDA emulator on the CPU", sizeof(prop->name) - 1);
  prop->totalGlobalMem = emu::DeviceMemoryCapacity();
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return emu::SetLastError(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMemoryClockRate:
      *value = 1000000;  // kHz: with a 64-bit bus, a nominal 16 GB/s
      return cudaSuccess;
    case cudaDevAttrGlobalMemoryBusWidth:
      *value = 64;
      return cudaSuccess;
    default:
      return emu::SetLastError(cudaErrorInvalidValue);
  }
}

cudaError_t cudaDeviceSynchronize() {
  const cudaError_t e = emu::CheckNotCapturing("cudaDeviceSynchronize");
  if (e != cudaSuccess) return e;
  emu::SynchronizeDevice(/*include_non_blocking=*/true);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  const cudaError_t e = emu::CheckNotCapturing("cudaStreamSynchronize");
  if (e != cudaSuccess) return e;
  emu::SynchronizeStream(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = emu::CreateStream(/*non_blocking=*/false);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  *stream = emu::CreateStream((flags & cudaStreamNonBlocking) != 0);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  emu::DestroyStream(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  return emu::BeginCapture(stream);
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  std::vector<emu::Operation> operations;
  *graph = nullptr;
  const cudaError_t e = emu::EndCapture(stream, &operations);
  if (e != cudaSuccess) return e;
  *graph = new CUgraph_st{std::move(operations)};
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->operations};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  return emu::Enqueue(stream, [exec] {
    for (const emu::Operation& op : exec->operations) op();
  });
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  const cudaError_t e = emu::CheckNotCapturing("cudaMalloc");
  return e != cudaSuccess ? e : emu::AllocateDevice(ptr, bytes);
}

cudaError_t cudaFree(void* ptr) {
  const cudaError_t e = emu::CheckNotCapturing("cudaFree");
  if (e != cudaSuccess) return e;
  emu::SynchronizeDevice(/*include_non_blocking=*/true);  // cudaFree waits for the device
  return emu::FreeDevice(ptr);
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  const cudaError_t e = emu::CheckNotCapturing("cudaMallocHost");
  if (e != cudaSuccess) return e;
  *ptr = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (*ptr == nullptr) return emu::SetLastError(cudaErrorMemoryAllocation);
  std::lock_guard lock(Pinned().mu);
  Pinned().blocks.push_back(*ptr);
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  std::lock_guard lock(Pinned().mu);
  auto& blocks = Pinned().blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i] == ptr) {
      blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(i));
      std::free(ptr);
      return cudaSuccess;
    }
  }
  if (ptr == nullptr) return cudaSuccess;
  emu::Complain("cudaFreeHost of a pointer cudaMallocHost did not return");
  return emu::SetLastError(cudaErrorInvalidValue);
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *total_bytes = emu::DeviceMemoryCapacity();
  *free_bytes = *total_bytes - emu::DeviceMemoryUsed();
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  const cudaError_t e = CheckCopy(dst, src, bytes, kind, "cudaMemcpyAsync");
  if (e != cudaSuccess) return e;
  return emu::Enqueue(stream, [=] { std::memmove(dst, src, bytes); });
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const cudaError_t e = emu::CheckNotCapturing("cudaMemcpy");
  if (e != cudaSuccess) return e;
  const cudaError_t issued = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  emu::SynchronizeDevice(/*include_non_blocking=*/false);
  return issued;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes != 0 && !emu::IsDeviceRange(dst, bytes)) {
    emu::Complain("cudaMemset of " + std::to_string(bytes) + " bytes outside device memory");
    return emu::SetLastError(cudaErrorInvalidValue);
  }
  return emu::Enqueue(stream, [=] { std::memset(dst, value, bytes); });
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  const cudaError_t e = emu::CheckNotCapturing("cudaMemset");
  if (e != cudaSuccess) return e;
  const cudaError_t issued = cudaMemsetAsync(dst, value, bytes, nullptr);
  emu::SynchronizeDevice(/*include_non_blocking=*/false);
  return issued;
}

cudaError_t cudaGetLastError() { return emu::TakeLastError(); }

cudaError_t cudaPeekAtLastError() { return emu::PeekLastError(); }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread:
      return "cudaErrorStreamCaptureWrongThread";
    default:
      return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory (emulated device)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    default:
      return cudaGetErrorName(error);
  }
}

}  // extern "C"
