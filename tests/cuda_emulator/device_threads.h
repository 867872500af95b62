// Runs a CUDA grid on the calling CPU thread: every block in turn, every GPU thread of a block as a
// fiber, so __syncthreads and warp shuffles block and resume exactly where the kernel wrote them.
//
// This is what lets the CUDA kernels and CudaBackend run (and be tested) on machines without a
// GPU. It checks what a GPU would silently get wrong or hang on: a barrier or shuffle that some
// threads never reach, a shuffle naming a lane that has exited or is outside its mask, and launch
// configurations the hardware refuses. Threads of alternate blocks run in opposite orders, so a
// missing __syncthreads between one thread's write and another's read fails in one of them. It
// does not model timing or memory ordering between blocks: blocks run one after another.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <functional>

namespace mambaserve::cuda_emulator {

// What a running GPU thread sees as its built-in variables.
struct ThreadIndex {
  uint3 thread_idx{};
  uint3 block_idx{};
  dim3 block_dim{};
  dim3 grid_dim{};
};

// The built-in variables of the GPU thread running now. Only valid inside a kernel.
const ThreadIndex& CurrentThread();

// __syncthreads(): waits until every thread of the block that has not exited arrives.
void SyncThreads();

// __shfl_xor_sync on 32 raw bits: waits for every lane in `mask`, returns the bits of lane
// (own lane ^ lane_mask). `width` must be 32 (the only width the kernels use).
uint32_t ShuffleXor32(unsigned mask, uint32_t bits, int lane_mask, int width);

// Validates a launch configuration the way the driver does; cudaSuccess or the launch error.
cudaError_t CheckLaunchConfiguration(dim3 grid, dim3 block);

// Runs `kernel_body` once per GPU thread of the grid. Aborts with a diagnostic on a deadlock or an
// invalid shuffle (a real GPU would hang or return garbage there). Not reentrant per CPU thread.
void RunGrid(dim3 grid, dim3 block, const std::function<void()>& kernel_body);

template <typename T>
T ShuffleXor(unsigned mask, T value, int lane_mask, int width) {
  static_assert(sizeof(T) == 4, "the emulator shuffles 32-bit values");
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits = ShuffleXor32(mask, bits, lane_mask, width);
  std::memcpy(&value, &bits, 4);
  return value;
}

}  // namespace mambaserve::cuda_emulator
