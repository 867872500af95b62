// Included ahead of every kernels/*.cu file when it is compiled as plain C++ for the emulator
// (see CMakeLists.txt): maps the CUDA built-ins the kernels use onto device_threads.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "tests/cuda_emulator/device_threads.h"
#include "tests/cuda_emulator/emulated_device.h"

// Shared memory: one copy per block. Blocks run one after another on the launching CPU thread,
// so a thread-local static is exactly that.
#undef __shared__
#define __shared__ static thread_local

#define threadIdx (::mambaserve::cuda_emulator::CurrentThread().thread_idx)
#define blockIdx (::mambaserve::cuda_emulator::CurrentThread().block_idx)
#define blockDim (::mambaserve::cuda_emulator::CurrentThread().block_dim)
#define gridDim (::mambaserve::cuda_emulator::CurrentThread().grid_dim)

// Launch bounds guide nvcc's register allocation; the emulator has none to guide.
#undef __launch_bounds__
#define __launch_bounds__(...)

inline void __syncthreads() { ::mambaserve::cuda_emulator::SyncThreads(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  return ::mambaserve::cuda_emulator::ShuffleXor(mask, value, lane_mask, width);
}

inline float __uint_as_float(unsigned bits) { return std::bit_cast<float>(bits); }
inline float __int_as_float(int bits) { return std::bit_cast<float>(bits); }

// Cache-hinted loads are plain loads.
template <typename T>
T __ldcs(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}

// Threads switch only at barriers and shuffles, and blocks run one after another: an atomic is a
// plain read-modify-write, and a fence has nothing to order.
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  const unsigned old = *address;
  *address = old + value;
  return old;
}
inline void __threadfence() {}

inline float cospif(float x) { return static_cast<float>(std::cos(M_PI * static_cast<double>(x))); }

// Device code's overloaded min/max.
using std::max;
using std::min;
