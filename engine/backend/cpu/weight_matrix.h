// A weight matrix [rows][cols] held in f32 or bf16, and the GEMM that multiplies activations by it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/cpu/huge_page_allocator.h"
#include "engine/backend/cpu/small_batch_gemm.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/model/model.h"
#include "engine/model/safetensors.h"

namespace mambaserve {

class WeightMatrix {
 public:
  WeightMatrix() = default;
  // A checkpoint tensor (any dtype, viewed as [rows][cols]) held as `dtype` (kF32 or kBF16). With
  // `model` given, a tensor already in `dtype` inside its checkpoint's file mapping is read in
  // place, not copied (resident memory holds the weights once, not twice; the matrix keeps the
  // model alive), and a tensor converted into memory of its own has its mapped pages released.
  static WeightMatrix FromTensor(const TensorView& tensor, int64_t rows, int64_t cols, DType dtype,
                                 std::shared_ptr<const Model> model = nullptr);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  DType dtype() const { return dtype_; }
  int64_t bytes() const { return rows_ * cols_ * static_cast<int64_t>(DTypeSize(dtype_)); }
  bool in_place() const { return mapping_ != nullptr; }

  // Row r converted to f32: out[cols].
  void RowToF32(int64_t r, float* out) const;

  // y[t][ldy] (first rows() columns) = x[t][ldx] (first cols() columns) · Wᵀ, t < tokens.
  // fp32 accumulation; parallel over output rows. 1-16 tokens (bf16 weights; 1-32 for f32):
  // small_batch_gemm.h (bf16 weights widened exactly); more: oneDNN (bf16 weights times
  // activations rounded to bf16), else OpenBLAS.
  void MatMul(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
              ThreadPool& pool) const;

 private:
  void MatMulOneDnn(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                    ThreadPool& pool) const;
  void MatMulRows(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                  int64_t row_begin, int64_t row_end) const;
  bool UsesDecodeKernel(int64_t tokens) const {
    return use_small_batch_kernel_ && tokens <= cpu::SmallBatchMaxTokens(dtype_);
  }

  // Decode batches (SmallBatchMaxTokens) skip BLAS (see small_batch_gemm.h) where AVX-512 is
  // available; MAMBASERVE_CPU_SMALL_BATCH_GEMM=0 turns that off (for comparisons).
  bool use_small_batch_kernel_ = false;
  // Larger products go through oneDNN (see onednn_matmul.h); MAMBASERVE_CPU_ONEDNN=0 leaves them to
  // OpenBLAS (for comparisons).
  bool use_onednn_ = false;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  DType dtype_ = DType::kF32;
  const float* f32() const {
    return mapped_ != nullptr ? static_cast<const float*>(mapped_) : f32_.data();
  }
  const uint16_t* bf16() const {
    return mapped_ != nullptr ? static_cast<const uint16_t*>(mapped_) : bf16_.data();
  }

  // [rows][cols] when not in place, in dtype_; on huge pages (see huge_page_allocator.h).
  std::vector<float, cpu::HugePageAllocator<float>> f32_;
  std::vector<uint16_t, cpu::HugePageAllocator<uint16_t>> bf16_;
  const void* mapped_ = nullptr;          // the checkpoint's tensor, when in place
  std::shared_ptr<const Model> mapping_;  // keeps it mapped
};

}  // namespace mambaserve
