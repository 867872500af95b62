// Page-locked host memory for the logits buffers the device copies into (a StepOutput's buffer
// comes to live here when a CudaBackend first writes it). A copy into pageable memory goes through
// a driver staging buffer at a fraction of the bus rate: at batch 256 with a 65k vocabulary that is
// 67 MB per sampled step.
#pragma once

#include <cstddef>
#include <mutex>
#include <unordered_set>

#include "engine/backend/backend.h"

namespace mambaserve {

class PinnedHostMemory final : public HostMemory {
 public:
  // Buffers under `min_pinned_bytes` (where the copy's rate does not matter, and page-locking
  // costs more than it saves), and any cudaMallocHost refuses, come from the heap.
  explicit PinnedHostMemory(size_t min_pinned_bytes = kDefaultMinPinnedBytes)
      : min_pinned_bytes_(min_pinned_bytes) {}
  static constexpr size_t kDefaultMinPinnedBytes = size_t{64} << 10;

  void* Allocate(size_t bytes) override;
  void Free(void* p, size_t bytes) override;
  // Whether `p` is the start of a buffer this gave out page-locked.
  bool IsPageLocked(const void* p) const;

 private:
  const size_t min_pinned_bytes_;
  mutable std::mutex mu_;
  std::unordered_set<const void*> pinned_;
};

}  // namespace mambaserve
