// A weight matrix [rows][cols] held in f32 or bf16, and the GEMM that multiplies activations by it.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend/cpu/huge_page_allocator.h"
#include "engine/backend/cpu/small_batch_gemm.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/cpu/weight_panels.h"
#include "engine/model/safetensors.h"

namespace mambaserve {

class WeightMatrix {
 public:
  WeightMatrix() = default;
  // A checkpoint tensor (any dtype, viewed as [rows][cols]) held as `dtype` (kF32 or kBF16) in
  // the panels of weight_panels.h. With the `checkpoint` that maps it, the tensor's mapped pages
  // are released as they are packed, so resident memory holds the weights about once, not twice.
  static WeightMatrix FromTensor(const TensorView& tensor, int64_t rows, int64_t cols, DType dtype,
                                 const Checkpoint* checkpoint = nullptr);

  int64_t rows() const { return panels_.rows; }
  int64_t cols() const { return panels_.cols; }
  DType dtype() const { return panels_.dtype; }
  // What the matrix occupies (and a product reads): padding included.
  int64_t bytes() const {
    return panels_.elements() * static_cast<int64_t>(DTypeSize(panels_.dtype));
  }

  // Row r converted to f32: out[cols].
  void RowToF32(int64_t r, float* out) const;

  // y[t][ldy] (first rows() columns) = x[t][ldx] (first cols() columns) · Wᵀ, t < tokens.
  // fp32 accumulation; parallel over panels of 64 output rows. 1-8 tokens (bf16 weights; 1-32 for
  // f32): small_batch_gemm.h (bf16 weights widened exactly); more: oneDNN, else OpenBLAS. bf16
  // weights multiply activations rounded to bf16 on every path.
  void MatMul(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
              ThreadPool& pool) const;

 private:
  void MatMulOneDnn(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                    ThreadPool& pool) const;
  // Panels [begin, end) through the decode kernel or OpenBLAS.
  void MatMulPanels(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                    int64_t begin, int64_t end) const;
  bool UsesDecodeKernel(int64_t tokens) const {
    return use_small_batch_kernel_ && tokens <= cpu::SmallBatchMaxTokens(panels_.dtype);
  }
  bool UsesOneDnn(int64_t tokens) const {
    return use_onednn_ && tokens > 1 && !UsesDecodeKernel(tokens);
  }
  const void* Panel(int64_t p) const {
    const size_t offset = static_cast<size_t>(p * panels_.panel_elements());
    return panels_.dtype == DType::kBF16 ? static_cast<const void*>(bf16_.data() + offset)
                                         : f32_.data() + offset;
  }

  // Decode batches (SmallBatchMaxTokens) skip BLAS (see small_batch_gemm.h) where AVX-512 is
  // available; MAMBASERVE_CPU_SMALL_BATCH_GEMM=0 turns that off (for comparisons).
  bool use_small_batch_kernel_ = false;
  // Larger products go through oneDNN (see onednn_matmul.h); MAMBASERVE_CPU_ONEDNN=0 leaves them to
  // OpenBLAS (for comparisons).
  bool use_onednn_ = false;
  cpu::WeightPanels panels_;
  // The panels, in dtype; on huge pages (see huge_page_allocator.h).
  std::vector<float, cpu::HugePageAllocator<float>> f32_;
  std::vector<uint16_t, cpu::HugePageAllocator<uint16_t>> bf16_;
};

}  // namespace mambaserve
