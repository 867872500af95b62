// The emulator's own guarantees: barriers and shuffles behave as on a GPU, and what a GPU would
// hang on or silently corrupt (a shuffle naming an exited lane, a deadlocked barrier, a copy or
// GEMM operand outside its allocation, a synchronous call during graph capture) is reported.
#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/cuda_emulator/kernel_prelude.h"

namespace mambaserve::cuda_emulator {
namespace {

// Each thread reads its right neighbour's value after a barrier: without the barrier, threads
// running one after another would read values not yet written.
__global__ void RotateThroughShared(const int* in, int* out) {
  __shared__ int values[256];
  const int t = threadIdx.x;
  values[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = values[(t + 1) % blockDim.x];
}

// The same with the left neighbour: with threads run in one fixed order, one of the two
// directions would pass even without the barrier.
__global__ void RotateLeftThroughShared(const int* in, int* out) {
  __shared__ int values[256];
  const int t = threadIdx.x;
  values[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = values[(t + blockDim.x - 1) % blockDim.x];
}

// Both directions without the barrier: alternate blocks run their threads in opposite orders, so
// one of the two reads stale shared memory in some block.
__global__ void RotateBothWaysWithoutBarrier(int* out) {
  __shared__ int values[64];
  const int t = threadIdx.x;
  values[t] = static_cast<int>(blockIdx.x * 1000 + t);
  out[blockIdx.x * 128 + t] = values[(t + 1) % 64];
  out[blockIdx.x * 128 + 64 + t] = values[(t + 63) % 64];
}

__global__ void GroupSums(const float* in, float* out, int lanes) {
  float v = in[threadIdx.x];
  const unsigned mask =
      lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u) << ((threadIdx.x & 31) / lanes * lanes);
  for (int offset = lanes >> 1; offset > 0; offset >>= 1) v += __shfl_xor_sync(mask, v, offset);
  out[threadIdx.x] = v;
}

__global__ void ShuffleAfterLaneExits() {
  if (threadIdx.x == 3) return;
  __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void BarrierAgainstShuffle() {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  }
}

__global__ void AddOne(float* data) { data[threadIdx.x] += 1.0f; }

template <typename T>
T* DeviceCopy(const std::vector<T>& host) {
  T* device = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return device;
}

template <typename T>
std::vector<T> HostCopy(const T* device, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

TEST(CudaEmulatorTest, SyncThreadsOrdersSharedMemoryAcrossEveryBlock) {
  std::vector<int> in(3 * 256);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i);
  int* d_in = DeviceCopy(in);
  int* d_out = DeviceCopy(std::vector<int>(in.size(), -1));
  Launch(RotateThroughShared, 3, 256, nullptr, d_in, d_out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> out = HostCopy(d_out, in.size());
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 256; ++t) ASSERT_EQ(out[b * 256 + t], b * 256 + (t + 1) % 256);
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmulatorTest, ThreadOrderAlternatesSoAMissingBarrierShowsEitherWay) {
  std::vector<int> in(2 * 256);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(3 * i);
  int* d_in = DeviceCopy(in);
  int* d_out = DeviceCopy(std::vector<int>(in.size(), -1));
  Launch(RotateLeftThroughShared, 2, 256, nullptr, d_in, d_out);
  const std::vector<int> out = HostCopy(d_out, in.size());
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 256; ++t) ASSERT_EQ(out[b * 256 + t], 3 * (b * 256 + (t + 255) % 256));

  int* d_racy = DeviceCopy(std::vector<int>(2 * 128, -1));
  Launch(RotateBothWaysWithoutBarrier, 2, 64, nullptr, d_racy);
  const std::vector<int> racy = HostCopy(d_racy, 2 * 128);
  int correct = 0;
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t < 64; ++t) {
      correct += racy[b * 128 + t] == b * 1000 + (t + 1) % 64;
      correct += racy[b * 128 + 64 + t] == b * 1000 + (t + 63) % 64;
    }
  }
  EXPECT_LT(correct, 256) << "the missing barrier went unnoticed";
  cudaFree(d_in);
  cudaFree(d_out);
  cudaFree(d_racy);
}

TEST(CudaEmulatorTest, IssuedWorkRunsOnlyWhenSomethingWaitsForIt) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* data = DeviceCopy(std::vector<float>(32, 0.0f));
  Launch(AddOne, 1, 32, stream, data);
  std::vector<float> host(32, -1.0f);
  ASSERT_EQ(cudaMemcpyAsync(host.data(), data, 32 * sizeof(float), cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  EXPECT_EQ(host[0], -1.0f);  // not waited for yet: a host read now races
  // A synchronous copy waits for the legacy stream and blocking streams, not this one.
  EXPECT_EQ(HostCopy(data, 32)[0], 0.0f);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(host[0], 1.0f);
  cudaFree(data);
  cudaStreamDestroy(stream);
}

TEST(CudaEmulatorTest, ShuffleXorReducesWithinEachLaneGroup) {
  for (int lanes : {2, 8, 16, 32}) {
    std::vector<float> in(64);
    for (int i = 0; i < 64; ++i) in[i] = static_cast<float>(i * i % 7);
    float* d_in = DeviceCopy(in);
    float* d_out = DeviceCopy(std::vector<float>(64, 0.0f));
    Launch(GroupSums, 1, 64, nullptr, d_in, d_out, lanes);
    const std::vector<float> out = HostCopy(d_out, 64);
    for (int i = 0; i < 64; ++i) {
      float expected = 0.0f;
      for (int j = i / lanes * lanes; j < (i / lanes + 1) * lanes; ++j) expected += in[j];
      ASSERT_EQ(out[i], expected) << "lanes " << lanes << " thread " << i;
    }
    cudaFree(d_in);
    cudaFree(d_out);
  }
}

TEST(CudaEmulatorDeathTest, ShuffleNamingAnExitedLaneAborts) {
  EXPECT_DEATH(
      {
        Launch(ShuffleAfterLaneExits, 1, 32, nullptr);
        cudaDeviceSynchronize();
      },
      "lane 3 of warp 0, which has exited");
}

TEST(CudaEmulatorDeathTest, BarrierThatCannotCompleteIsReportedAsDeadlock) {
  EXPECT_DEATH(
      {
        Launch(BarrierAgainstShuffle, 1, 32, nullptr);
        cudaDeviceSynchronize();
      },
      "deadlock: 1 threads wait at __syncthreads, 31 at a warp shuffle");
}

TEST(CudaEmulatorTest, InvalidLaunchConfigurationIsTheLastError) {
  Launch(AddOne, 1, 2048, nullptr, static_cast<float*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  Launch(AddOne, dim3(1, 70000), 32, nullptr, static_cast<float*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
}

TEST(CudaEmulatorTest, CopiesMustStayInsideTheirAllocation) {
  void* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 1000), cudaSuccess);
  std::vector<char> host(4096);
  // The bytes asked for, not cudaMalloc's 256-byte rounding, bound what may be touched.
  EXPECT_EQ(cudaMemcpy(device, host.data(), 1000, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(device, host.data(), 1001, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), device, 16, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(static_cast<char*>(device) + 512, 0, 512), cudaErrorInvalidValue);
  cudaGetLastError();
  cudaFree(device);
}

TEST(CudaEmulatorTest, AllocationsBeyondTheDeviceFailAndFreeMemoryIsReported) {
  size_t free_before = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  void* too_big = nullptr;
  EXPECT_EQ(cudaMalloc(&too_big, total + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
  void* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 1 << 20), cudaSuccess);
  size_t free_after = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_after, &total), cudaSuccess);
  EXPECT_EQ(free_before - free_after, size_t{1} << 20);
  cudaFree(device);
}

TEST(CudaEmulatorTest, FreshAllocationsHoldNaNGarbage) {
  float* device = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), 16 * sizeof(float)), cudaSuccess);
  for (float v : HostCopy(device, 16)) EXPECT_TRUE(std::isnan(v));
  cudaFree(device);
}

TEST(CudaEmulatorTest, GraphReplaysCapturedWorkOnCurrentMemory) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  float* data = DeviceCopy(std::vector<float>(32, 0.0f));
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  Launch(AddOne, 1, 32, stream, data);
  Launch(AddOne, 1, 32, stream, data);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_EQ(HostCopy(data, 32)[5], 0.0f);  // captured, not run
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  EXPECT_EQ(HostCopy(data, 32)[5], 4.0f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(data);
  cudaStreamDestroy(stream);
}

TEST(CudaEmulatorTest, SynchronousCallDuringCaptureInvalidatesIt) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  void* device = nullptr;
  EXPECT_EQ(cudaMalloc(&device, 64), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  cudaGetLastError();
  cudaStreamDestroy(stream);
}

TEST(CudaEmulatorTest, GemmExMatchesDoubleProductForEveryTransposeAndChecksOperands) {
  const int m = 5, n = 3, k = 7;
  std::vector<float> a(m * k), b(k * n);
  for (int i = 0; i < m * k; ++i) a[i] = std::sin(0.3f * i);
  for (int i = 0; i < k * n; ++i) b[i] = std::cos(0.7f * i);
  float* d_a = DeviceCopy(a);
  float* d_b = DeviceCopy(b);
  float* d_c = DeviceCopy(std::vector<float>(m * n, 0.0f));
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  const float alpha = 1.0f, beta = 0.0f;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      // Same logical A (m x k) and B (k x n), stored transposed when ta / tb.
      const int lda = ta ? k : m, ldb = tb ? n : k;
      ASSERT_EQ(cublasGemmEx(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                             m, n, k, &alpha, d_a, CUDA_R_32F, lda, d_b, CUDA_R_32F, ldb, &beta,
                             d_c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                CUBLAS_STATUS_SUCCESS);
      const std::vector<float> c = HostCopy(d_c, m * n);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double expected = 0.0;
          for (int l = 0; l < k; ++l) {
            const double av = ta ? a[i * k + l] : a[l * m + i];
            const double bv = tb ? b[l * n + j] : b[j * k + l];
            expected += av * bv;
          }
          ASSERT_NEAR(c[j * m + i], expected, 1e-5) << ta << tb << " " << i << "," << j;
        }
      }
    }
  }
  // A leading dimension that walks past the end of A is refused before anything runs.
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, d_a, CUDA_R_32F, m + 1,
                         d_b, CUDA_R_32F, k, &beta, d_c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasDestroy(handle);
  cudaFree(d_a);
  cudaFree(d_b);
  cudaFree(d_c);
}

}  // namespace
}  // namespace mambaserve::cuda_emulator
