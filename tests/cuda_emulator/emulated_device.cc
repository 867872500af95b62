#include "tests/cuda_emulator/emulated_device.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

// The runtime's opaque stream type, defined here because the emulator is the runtime.
struct CUstream_st {
  bool non_blocking = false;  // cudaStreamNonBlocking: the legacy stream does not wait for it
  std::vector<mambaserve::cuda_emulator::Operation> pending;  // issued, run at a synchronisation
  bool capturing = false;
  bool capture_invalidated = false;
  std::thread::id capture_thread;
  std::vector<mambaserve::cuda_emulator::Operation> captured;
};

namespace mambaserve::cuda_emulator {
namespace {

// Allocations up to this size are filled with 0xff bytes (NaN as floats and bf16), as garbage a
// kernel must not read before writing; larger ones stay untouched (their pages are never
// committed unless used).
constexpr size_t kPoisonLimitBytes = size_t{64} << 20;
constexpr size_t kAlignment = 256;  // cudaMalloc's guarantee

struct DeviceMemory {
  std::mutex mu;
  struct Allocation {
    size_t requested;  // what range checks allow: reading the rounding is still a bug
    size_t rounded;    // what the capacity is charged
  };
  std::map<uintptr_t, Allocation> live;
  size_t used = 0;
};

DeviceMemory& Memory() {
  static DeviceMemory* memory = new DeviceMemory;
  return *memory;
}

CUstream_st& LegacyStream() {
  static CUstream_st* stream = new CUstream_st;
  return *stream;
}

// Every stream's pending work, guarded by one lock that is also held while work runs (the
// emulator executes one thing at a time anyway).
struct Streams {
  std::recursive_mutex mu;
  std::vector<CUstream_st*> all;  // the legacy stream first
};

Streams& AllStreams() {
  static Streams* streams = [] {
    auto* s = new Streams;
    s->all.push_back(&LegacyStream());
    return s;
  }();
  return *streams;
}

void RunPending(CUstream_st& s) {
  // Moved out first, so the stream's queue is empty again before any of its work runs.
  std::vector<Operation> work = std::move(s.pending);
  s.pending.clear();
  for (Operation& op : work) op();
}

CUstream_st& Resolve(cudaStream_t stream) {
  // 0 is the legacy default stream and 2 is cudaStreamPerThread: one queue for both.
  if (stream == nullptr || stream == cudaStreamPerThread || stream == cudaStreamLegacy)
    return LegacyStream();
  return *stream;
}

thread_local cudaError_t tls_last_error = cudaSuccess;
thread_local CUstream_st* tls_capturing = nullptr;

}  // namespace

size_t DeviceMemoryCapacity() {
  static const size_t capacity = [] {
    const char* env = std::getenv("MAMBASERVE_CUDA_EMULATOR_MEMORY_BYTES");
    return env != nullptr ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : size_t{2} << 30;
  }();
  return capacity;
}

size_t DeviceMemoryUsed() {
  std::lock_guard lock(Memory().mu);
  return Memory().used;
}

cudaError_t AllocateDevice(void** ptr, size_t bytes) {
  if (ptr == nullptr) return SetLastError(cudaErrorInvalidValue);
  *ptr = nullptr;
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  DeviceMemory& memory = Memory();
  {
    std::lock_guard lock(memory.mu);
    if (memory.used + rounded > DeviceMemoryCapacity())
      return SetLastError(cudaErrorMemoryAllocation);
    memory.used += rounded;
  }
  void* base = std::aligned_alloc(kAlignment, rounded);
  if (base == nullptr) {
    std::lock_guard lock(memory.mu);
    memory.used -= rounded;
    return SetLastError(cudaErrorMemoryAllocation);
  }
  if (rounded <= kPoisonLimitBytes) std::memset(base, 0xff, rounded);
  std::lock_guard lock(memory.mu);
  memory.live.emplace(reinterpret_cast<uintptr_t>(base), DeviceMemory::Allocation{bytes, rounded});
  *ptr = base;
  return cudaSuccess;
}

cudaError_t FreeDevice(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  DeviceMemory& memory = Memory();
  {
    std::lock_guard lock(memory.mu);
    const auto it = memory.live.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == memory.live.end()) {
      Complain("cudaFree of a pointer that is not a live device allocation");
      return SetLastError(cudaErrorInvalidValue);
    }
    memory.used -= it->second.rounded;
    memory.live.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}

bool IsDeviceRange(const void* ptr, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(ptr);
  DeviceMemory& memory = Memory();
  std::lock_guard lock(memory.mu);
  auto it = memory.live.upper_bound(begin);
  if (it == memory.live.begin()) return false;
  --it;
  return begin >= it->first && begin + bytes <= it->first + it->second.requested;
}

cudaError_t SetLastError(cudaError_t error) {
  if (error != cudaSuccess) tls_last_error = error;
  return error;
}

cudaError_t TakeLastError() {
  const cudaError_t error = tls_last_error;
  tls_last_error = cudaSuccess;
  return error;
}

cudaError_t PeekLastError() { return tls_last_error; }

void Complain(const std::string& what) {
  std::fprintf(stderr, "cuda emulator: %s\n", what.c_str());
}

cudaError_t Enqueue(cudaStream_t stream, Operation op) {
  Streams& streams = AllStreams();
  std::lock_guard lock(streams.mu);
  CUstream_st& s = Resolve(stream);
  if (s.capturing) {
    s.captured.push_back(std::move(op));
    return cudaSuccess;
  }
  // The legacy stream's implicit ordering: its work starts after what blocking streams issued
  // before it, and theirs after what it issued before. Running that earlier work now keeps the
  // order without tracking events.
  CUstream_st& legacy = LegacyStream();
  if (&s == &legacy) {
    for (CUstream_st* other : streams.all) {
      if (other != &legacy && !other->non_blocking) RunPending(*other);
    }
  } else if (!s.non_blocking) {
    RunPending(legacy);
  }
  s.pending.push_back(std::move(op));
  return cudaSuccess;
}

void SynchronizeStream(cudaStream_t stream) {
  std::lock_guard lock(AllStreams().mu);
  RunPending(Resolve(stream));
}

void SynchronizeDevice(bool include_non_blocking) {
  Streams& streams = AllStreams();
  std::lock_guard lock(streams.mu);
  for (CUstream_st* s : streams.all) {
    if (include_non_blocking || !s->non_blocking) RunPending(*s);
  }
}

cudaStream_t CreateStream(bool non_blocking) {
  auto* stream = new CUstream_st;
  stream->non_blocking = non_blocking;
  Streams& streams = AllStreams();
  std::lock_guard lock(streams.mu);
  streams.all.push_back(stream);
  return stream;
}

void DestroyStream(cudaStream_t stream) {
  if (stream == nullptr || stream == cudaStreamPerThread || stream == cudaStreamLegacy) return;
  Streams& streams = AllStreams();
  std::lock_guard lock(streams.mu);
  RunPending(*stream);  // work already issued still completes
  streams.all.erase(std::find(streams.all.begin(), streams.all.end(), stream));
  delete stream;
}

cudaError_t BeginCapture(cudaStream_t stream) {
  std::lock_guard lock(AllStreams().mu);
  CUstream_st& s = Resolve(stream);
  if (&s == &LegacyStream()) {
    Complain("graph capture on the legacy default stream");
    return SetLastError(cudaErrorStreamCaptureUnsupported);
  }
  if (s.capturing || tls_capturing != nullptr) return SetLastError(cudaErrorIllegalState);
  s.capturing = true;
  s.capture_invalidated = false;
  s.capture_thread = std::this_thread::get_id();
  s.captured.clear();
  tls_capturing = &s;
  return cudaSuccess;
}

cudaError_t EndCapture(cudaStream_t stream, std::vector<Operation>* operations) {
  std::lock_guard lock(AllStreams().mu);
  CUstream_st& s = Resolve(stream);
  if (!s.capturing) return SetLastError(cudaErrorIllegalState);
  if (s.capture_thread != std::this_thread::get_id())
    return SetLastError(cudaErrorStreamCaptureWrongThread);
  s.capturing = false;
  tls_capturing = nullptr;
  std::vector<Operation> captured = std::move(s.captured);
  s.captured.clear();
  if (s.capture_invalidated) return SetLastError(cudaErrorStreamCaptureInvalidated);
  *operations = std::move(captured);
  return cudaSuccess;
}

cudaError_t CheckNotCapturing(const char* what) {
  if (tls_capturing == nullptr) return cudaSuccess;
  tls_capturing->capture_invalidated = true;
  Complain(std::string(what) + " during stream capture (not allowed in thread-local capture mode)");
  return SetLastError(cudaErrorStreamCaptureUnsupported);
}

cudaError_t LaunchGrid(dim3 grid, dim3 block, cudaStream_t stream, Operation grid_body) {
  const cudaError_t config = CheckLaunchConfiguration(grid, block);
  if (config != cudaSuccess) {
    Complain("invalid launch configuration: grid (" + std::to_string(grid.x) + ", " +
             std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" +
             std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
             std::to_string(block.z) + ")");
    // As on a GPU, a failed launch breaks a capture in progress.
    if (tls_capturing != nullptr) tls_capturing->capture_invalidated = true;
    return SetLastError(config);
  }
  return Enqueue(stream, std::move(grid_body));
}

}  // namespace mambaserve::cuda_emulator
