// Device helpers shared by the kernel files (nvcc only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/kernel_types.h"
#include "kernels/launch_options.h"

namespace mambaserve::kernels {

template <typename T>
struct GemmElem;
template <>
struct GemmElem<float> {
  static constexpr GemmType kType = GemmType::kF32;
};
template <>
struct GemmElem<__nv_bfloat16> {
  static constexpr GemmType kType = GemmType::kBF16;
};

__device__ __forceinline__ float ToF32(float v) { return v; }
__device__ __forceinline__ float ToF32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T FromF32(float v);
template <>
__device__ __forceinline__ float FromF32<float>(float v) {
  return v;
}
// Round to nearest even, as torch's .to(torch.bfloat16) and the host's F32ToBf16.
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Whether `ptr` can be read or written as 16-byte vectors (float4, uint4).
inline bool IsAligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

// The first statement of every kernel: under programmatic dependent launch (launch_options.h) a
// kernel may start while the previous kernel in its stream is still running, and this waits for
// that kernel to finish and its writes to be visible. A no-op otherwise, and before sm_90.
__device__ __forceinline__ void WaitForPreviousKernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, 0, stream>>>(args...), with programmatic dependent launch when it
// is on. Call sites use this rather than the chevrons so that the kernel files also compile as
// plain C++ for tests/cuda_emulator, which runs them on the CPU (its kernel_prelude.h provides
// cuda_emulator::Launch; kernels run one after another there).
template <typename... Params, typename... Args>
void LaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                  const Args&... args) {
#if defined(MAMBASERVE_CUDA_EMULATOR)
  ::mambaserve::cuda_emulator::Launch(kernel, grid, block, stream, args...);
#else
  if (ProgrammaticDependentLaunch()) {
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = 0;
    config.stream = stream;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
    return;
  }
  // clang-format would split the launch chevrons as if they closed templates.
  // clang-format off
  kernel<<<grid, block, 0, stream>>>(args...);
  // clang-format on
#endif
}

// The status of the launch just made (configuration errors surface here; faults surface at the
// next synchronisation).
inline LaunchResult LastLaunchResult() { return static_cast<LaunchResult>(cudaGetLastError()); }

// Calls f(std::integral_constant<int, kN>{}) with kN the register row length that holds d_state
// (1..32) values: 4, 8, 16 (Mamba's d_state) or 32. Every scan kernel is instantiated for these.
template <typename F>
void WithStateRowLength(int d_state, F&& f) {
  if (d_state <= 4) {
    f(std::integral_constant<int, 4>{});
  } else if (d_state <= 8) {
    f(std::integral_constant<int, 8>{});
  } else if (d_state <= 16) {
    f(std::integral_constant<int, 16>{});
  } else {
    f(std::integral_constant<int, 32>{});
  }
}

// Dispatches a GemmType to a template taking the element type.
#define MS_DISPATCH_GEMM_TYPE(type, T, ...)                 \
  [&] {                                                     \
    if ((type) == ::mambaserve::kernels::GemmType::kBF16) { \
      using T = __nv_bfloat16;                              \
      return __VA_ARGS__();                                 \
    } else {                                                \
      using T = float;                                      \
      return __VA_ARGS__();                                 \
    }                                                       \
  }()

}  // namespace mambaserve::kernels
