// The state of the one emulated GPU behind the runtime and cuBLAS entry points of this directory:
// device memory (host allocations registered as device ranges), streams with graph capture, and
// the per-thread "last error".
//
// Streams run each operation when it is issued (the emulator has no concurrency), except while a
// stream is being captured into a graph: then operations are recorded, and a graph launch replays
// them. Capture follows CUDA's thread-local mode: a synchronous call from the capturing thread
// (cudaMalloc, cudaMemcpy, a synchronisation) fails and invalidates the capture, as on a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tests/cuda_emulator/device_threads.h"

namespace mambaserve::cuda_emulator {

using Operation = std::function<void()>;

// Bytes of device memory the emulated GPU reports: MAMBASERVE_CUDA_EMULATOR_MEMORY_BYTES, else
// 2 GiB. cudaMalloc fails once live allocations would exceed it.
size_t DeviceMemoryCapacity();
size_t DeviceMemoryUsed();

// Registers [ptr, ptr + bytes) as device memory / forgets it. Fails when over capacity.
cudaError_t AllocateDevice(void** ptr, size_t bytes);
cudaError_t FreeDevice(void* ptr);

// Whether [ptr, ptr + bytes) lies inside the bytes requested for one live device allocation.
bool IsDeviceRange(const void* ptr, size_t bytes);

// Records `error` as the calling thread's last error and returns it.
cudaError_t SetLastError(cudaError_t error);
cudaError_t TakeLastError();
cudaError_t PeekLastError();

// Prints a diagnostic for a call the emulator refuses (the return code alone rarely says why).
void Complain(const std::string& what);

// Runs `op` on `stream` now, or appends it to the stream's capture.
cudaError_t Enqueue(cudaStream_t stream, Operation op);

cudaStream_t CreateStream();
void DestroyStream(cudaStream_t stream);
// Graph capture on one stream: Begin starts recording, End hands back what was recorded (or
// cudaErrorStreamCaptureInvalidated when a refused call broke the capture).
cudaError_t BeginCapture(cudaStream_t stream);
cudaError_t EndCapture(cudaStream_t stream, std::vector<Operation>* operations);

// Fails (and invalidates any capture on this thread) when the calling thread is capturing: the
// check CUDA makes before a synchronous call. `what` names the call in the diagnostic.
cudaError_t CheckNotCapturing(const char* what);

// Validates the configuration, then enqueues the grid.
cudaError_t LaunchGrid(dim3 grid, dim3 block, cudaStream_t stream, Operation grid_body);

// What kernel_prelude.h's kernel launches call: runs kernel(args...) for every GPU thread.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
            const Args&... args) {
  LaunchGrid(grid, block, stream, [kernel, grid, block, ... captured = Params(args)] {
    RunGrid(grid, block, [&] { kernel(captured...); });
  });
}

}  // namespace mambaserve::cuda_emulator
