#include "engine/backend/cpu/weight_matrix.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "engine/backend/cpu/onednn_matmul.h"
#include "engine/backend/cpu/small_batch_gemm.h"

namespace mambaserve {
namespace {

// bf16 rows are widened into a per-thread tile this large before the BLAS call: big enough to
// amortise the call, small enough to stay in L2 next to the activations.
constexpr int64_t kTileBytes = 256 << 10;

}  // namespace

WeightMatrix WeightMatrix::FromTensor(const TensorView& tensor, int64_t rows, int64_t cols,
                                      DType dtype, std::shared_ptr<const Model> model) {
  WeightMatrix m;
  const char* small_batch = std::getenv("MAMBASERVE_CPU_SMALL_BATCH_GEMM");
  m.use_small_batch_kernel_ = cpu::SmallBatchGemmAvailable() &&
                              !(small_batch != nullptr && std::string_view(small_batch) == "0");
  const char* onednn = std::getenv("MAMBASERVE_CPU_ONEDNN");
  m.use_onednn_ = cpu::OneDnnAvailable() && !(onednn != nullptr && std::string_view(onednn) == "0");
  m.rows_ = rows;
  m.cols_ = cols;
  m.dtype_ = dtype;
  const size_t n = static_cast<size_t>(rows * cols);
  if (dtype != DType::kBF16) m.dtype_ = DType::kF32;
  const Checkpoint* checkpoint = model != nullptr ? model->checkpoint.get() : nullptr;
  const size_t tensor_bytes = n * DTypeSize(tensor.dtype);
  if (checkpoint != nullptr && tensor.dtype == m.dtype_ &&
      checkpoint->Maps(tensor.data, tensor_bytes)) {
    m.mapped_ = tensor.data;
    m.mapping_ = std::move(model);
    return m;
  }
  if (dtype == DType::kBF16) {
    m.bf16_.resize(n);
    if (tensor.dtype == DType::kBF16) {
      std::memcpy(m.bf16_.data(), tensor.data, n * 2);
    } else {
      std::vector<float> row(cols);
      for (int64_t r = 0; r < rows; ++r) {
        ConvertToF32(tensor.dtype, tensor.data + r * cols * DTypeSize(tensor.dtype), cols,
                     row.data());
        ConvertF32ToBf16(row.data(), cols, m.bf16_.data() + r * cols);
      }
    }
  } else {
    m.f32_.resize(n);
    ConvertToF32(tensor.dtype, tensor.data, n, m.f32_.data());
  }
  if (checkpoint != nullptr) checkpoint->ReleasePages(tensor.data, tensor_bytes);
  return m;
}

void WeightMatrix::RowToF32(int64_t r, float* out) const {
  if (dtype_ == DType::kF32) {
    std::memcpy(out, f32() + r * cols_, cols_ * sizeof(float));
  } else {
    ConvertToF32(DType::kBF16, bf16() + r * cols_, cols_, out);
  }
}

void WeightMatrix::MatMul(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                          ThreadPool& pool) const {
  const bool small_batch = UsesDecodeKernel(tokens);
  if (!small_batch && use_onednn_ && tokens > 1) {
    MatMulOneDnn(x, ldx, tokens, y, ldy, pool);
    return;
  }
  auto rows = [&](int64_t begin, int64_t end) { MatMulRows(x, ldx, tokens, y, ldy, begin, end); };
  if (small_batch) {
    // Streaming the weights is the whole cost of a decode product, and the two halves of a static
    // split finish apart when one core is slowed: about eight chunks per thread, taken in turn,
    // keep them together.
    const int64_t per_thread = rows_ / (8 * pool.num_threads());
    pool.ParallelForDynamic(rows_, std::max<int64_t>(16, per_thread / 16 * 16), rows);
  } else {
    // One BLAS call per thread (each call packs the activations again).
    pool.ParallelFor(rows_, rows, 16);
  }
  // Both split in multiples of 16 rows, so each thread's output stays cache-line aligned.
}

void WeightMatrix::MatMulOneDnn(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                                ThreadPool& pool) const {
  // oneDNN multiplies bf16 weights by bf16 activations: round them once here, for all threads
  // (vectorised and split over them: a 512-token prompt is 48M values to round across the layers).
  const void* activations = x;
  int64_t ld = ldx;
  thread_local std::vector<uint16_t> x_bf16;
  if (dtype_ == DType::kBF16) {
    x_bf16.resize(static_cast<size_t>(tokens * cols_));
    uint16_t* rounded = x_bf16.data();
    pool.ParallelFor(tokens, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) ConvertF32ToBf16(x + t * ldx, cols_, rounded + t * cols_);
    });
    activations = x_bf16.data();
    ld = cols_;
  }
  const void* weights = dtype_ == DType::kBF16 ? static_cast<const void*>(bf16()) : f32();
  const size_t element = DTypeSize(dtype_);
  pool.ParallelFor(
      rows_,
      [&](int64_t begin, int64_t end) {
        const void* w = static_cast<const char*>(weights) + begin * cols_ * element;
        if (!cpu::OneDnnMatMul(activations, ld, tokens, w, end - begin, cols_, dtype_, y + begin,
                               ldy)) {
          MatMulRows(x, ldx, tokens, y, ldy, begin, end);
        }
      },
      16);
}

void WeightMatrix::MatMulRows(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                              int64_t row_begin, int64_t row_end) const {
  const int64_t nrows = row_end - row_begin;
  if (UsesDecodeKernel(tokens)) {
    // Decode: weights streamed once, straight from their stored dtype.
    if (dtype_ == DType::kF32) {
      cpu::SmallBatchGemm(x, ldx, tokens, f32() + row_begin * cols_, nrows, cols_, y + row_begin,
                          ldy);
    } else {
      cpu::SmallBatchGemm(x, ldx, tokens, bf16() + row_begin * cols_, nrows, cols_, y + row_begin,
                          ldy);
    }
    return;
  }
  auto multiply = [&](const float* w, int64_t row0, int64_t rows) {
    if (tokens == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols_),
                  1.0f, w, static_cast<int>(cols_), x, 1, 0.0f, y + row0, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(tokens),
                  static_cast<int>(rows), static_cast<int>(cols_), 1.0f, x, static_cast<int>(ldx),
                  w, static_cast<int>(cols_), 0.0f, y + row0, static_cast<int>(ldy));
    }
  };
  if (dtype_ == DType::kF32) {
    multiply(f32() + row_begin * cols_, row_begin, nrows);
    return;
  }
  // bf16 through BLAS (prefill, or no AVX-512): widen tiles of rows to f32 first.
  const int64_t tile_rows = std::max<int64_t>(8, kTileBytes / (cols_ * 4));
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(tile_rows * cols_));
  for (int64_t r0 = row_begin; r0 < row_end; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, row_end - r0);
    ConvertToF32(DType::kBF16, bf16() + r0 * cols_, rows * cols_, tile.data());
    multiply(tile.data(), r0, rows);
  }
}

}  // namespace mambaserve
