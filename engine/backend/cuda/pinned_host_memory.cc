#include "engine/backend/cuda/pinned_host_memory.h"

#include <cuda_runtime_api.h>

#include <new>

namespace mambaserve {

void* PinnedHostMemory::Allocate(size_t bytes) {
  if (bytes >= min_pinned_bytes_) {
    void* p = nullptr;
    if (cudaMallocHost(&p, bytes) == cudaSuccess) {
      std::lock_guard<std::mutex> lock(mu_);
      pinned_.insert(p);
      return p;
    }
    cudaGetLastError();  // not sticky: the heap will do, at the pageable copy rate
  }
  return ::operator new(bytes);
}

void PinnedHostMemory::Free(void* p, size_t bytes) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pinned_.erase(p) == 0) {
      ::operator delete(p);
      return;
    }
  }
  cudaFreeHost(p);
}

bool PinnedHostMemory::IsPageLocked(const void* p) const {
  std::lock_guard<std::mutex> lock(mu_);
  return pinned_.count(p) != 0;
}

}  // namespace mambaserve
