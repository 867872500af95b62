// The state of the one emulated GPU behind the runtime and cuBLAS entry points of this directory:
// device memory (host allocations registered as device ranges), streams with graph capture, and
// the per-thread "last error".
//
// Work issued to a stream runs, in issue order, only when something waits for it: a stream or
// device synchronisation, a synchronous copy or memset (which, like CUDA's legacy stream, waits for
// every stream but non-blocking ones), cudaFree, or the stream's destruction. So host code that
// reads a result without waiting for it reads stale memory here, every time, instead of racing
// a GPU. While a stream is being captured into a graph, operations are recorded instead, and a
// graph launch replays them. Capture follows CUDA's thread-local mode: a synchronous call from the
// capturing thread (cudaMalloc, cudaMemcpy, a synchronisation) fails and invalidates the capture.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
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

// Queues `op` on `stream`, or appends it to the stream's capture.
cudaError_t Enqueue(cudaStream_t stream, Operation op);
// Runs what `stream` has queued / what every stream (optionally but non-blocking ones) has queued.
void SynchronizeStream(cudaStream_t stream);
void SynchronizeDevice(bool include_non_blocking);

cudaStream_t CreateStream(bool non_blocking);
void DestroyStream(cudaStream_t stream);  // runs its queued work first
// Graph capture on one stream: Begin starts recording, End hands back what was recorded (or
// cudaErrorStreamCaptureInvalidated when a refused call broke the capture).
cudaError_t BeginCapture(cudaStream_t stream);
cudaError_t EndCapture(cudaStream_t stream, std::vector<Operation>* operations);

// Fails (and invalidates any capture on this thread) when the calling thread is capturing: the
// check CUDA makes before a synchronous call. `what` names the call in the diagnostic.
cudaError_t CheckNotCapturing(const char* what);

// Validates the configuration, then enqueues the grid.
cudaError_t LaunchGrid(dim3 grid, dim3 block, cudaStream_t stream, Operation grid_body);

// An implicit conversion, as passing an argument to a by-value kernel parameter is under nvcc
// (a cast would also accept const or void* arguments that nvcc rejects).
template <typename To>
To Implicit(std::type_identity_t<To> value) {
  return value;
}

// What kernel_prelude.h's kernel launches call: runs kernel(args...) for every GPU thread.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
            const Args&... args) {
  LaunchGrid(grid, block, stream, [kernel, grid, block, ... captured = Implicit<Params>(args)] {
    RunGrid(grid, block, [&] { kernel(captured...); });
  });
}

}  // namespace mambaserve::cuda_emulator
