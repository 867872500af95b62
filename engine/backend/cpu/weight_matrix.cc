#include "engine/backend/cpu/weight_matrix.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "engine/backend/cpu/onednn_matmul.h"
#include "engine/backend/cpu/small_batch_gemm.h"

namespace mambaserve {
namespace {

constexpr int64_t kPanelRows = cpu::WeightPanels::kPanelRows;
// From this many tokens per thread, oneDNN products split the tokens between threads, not the rows.
constexpr int64_t kTokensPerThreadToSplitTokens = 64;

// Writes rows [row_begin, row_end) of `tensor` (any dtype, rows of `cols`) into their panels,
// converted to T (float, or uint16_t for bf16).
template <typename T>
void PackRows(const TensorView& tensor, const cpu::WeightPanels& layout, int64_t row_begin,
              int64_t row_end, T* out) {
  const int64_t cols = layout.cols;
  const size_t row_bytes = static_cast<size_t>(cols) * DTypeSize(tensor.dtype);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<uint16_t> rounded(std::is_same_v<T, uint16_t> ? static_cast<size_t>(cols) : 0);
  for (int64_t r = row_begin; r < row_end; ++r) {
    ConvertToF32(tensor.dtype, tensor.data + r * row_bytes, static_cast<size_t>(cols), row.data());
    if constexpr (std::is_same_v<T, uint16_t>) {
      ConvertF32ToBf16(row.data(), static_cast<size_t>(cols), rounded.data());
      for (int64_t k = 0; k < cols; ++k) out[layout.Offset(r, k)] = rounded[k];
    } else {
      for (int64_t k = 0; k < cols; ++k) out[layout.Offset(r, k)] = row[k];
    }
  }
}

// Packs the whole tensor panel by panel; with a checkpoint, the source pages of each packed panel
// are dropped as it goes (a 50k-row embedding is hundreds of panels: releasing only at the end
// would hold it twice meanwhile). ReleasePages keeps the partial pages at a range's ends, so the
// few a panel boundary leaves behind are dropped by one release of the whole tensor at the end.
template <typename T>
void Pack(const TensorView& tensor, const cpu::WeightPanels& layout, const Checkpoint* checkpoint,
          T* out) {
  const size_t row_bytes = static_cast<size_t>(layout.cols) * DTypeSize(tensor.dtype);
  const unsigned char* released = tensor.data;  // source bytes before this are dropped
  for (int64_t p = 0; p < layout.panels(); ++p) {
    const int64_t row_end = p * kPanelRows + layout.RowsInPanel(p);
    PackRows(tensor, layout, p * kPanelRows, row_end, out);
    if (checkpoint == nullptr) continue;
    const unsigned char* packed = tensor.data + row_end * row_bytes;
    checkpoint->ReleasePages(released, static_cast<size_t>(packed - released));
    released = packed;
  }
  if (checkpoint != nullptr) checkpoint->ReleasePages(tensor.data, tensor.nbytes);
}

}  // namespace

WeightMatrix WeightMatrix::FromTensor(const TensorView& tensor, int64_t rows, int64_t cols,
                                      DType dtype, const Checkpoint* checkpoint) {
  WeightMatrix m;
  const char* small_batch = std::getenv("MAMBASERVE_CPU_SMALL_BATCH_GEMM");
  m.use_small_batch_kernel_ = cpu::SmallBatchGemmAvailable() &&
                              !(small_batch != nullptr && std::string_view(small_batch) == "0");
  const char* onednn = std::getenv("MAMBASERVE_CPU_ONEDNN");
  m.use_onednn_ = cpu::OneDnnAvailable() && !(onednn != nullptr && std::string_view(onednn) == "0");
  m.panels_ = {rows, cols, dtype == DType::kBF16 ? DType::kBF16 : DType::kF32};
  // Zero-filled: the padding past the last row and column must multiply to nothing.
  if (m.panels_.dtype == DType::kBF16) {
    m.bf16_.resize(static_cast<size_t>(m.panels_.elements()));
    Pack(tensor, m.panels_, checkpoint, m.bf16_.data());
  } else {
    m.f32_.resize(static_cast<size_t>(m.panels_.elements()));
    Pack(tensor, m.panels_, checkpoint, m.f32_.data());
  }
  return m;
}

void WeightMatrix::RowToF32(int64_t r, float* out) const {
  for (int64_t k = 0; k < panels_.cols; ++k) {
    const size_t at = static_cast<size_t>(panels_.Offset(r, k));
    out[k] = panels_.dtype == DType::kBF16 ? Bf16ToF32(bf16_[at]) : f32_[at];
  }
}

void WeightMatrix::MatMul(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                          ThreadPool& pool) const {
  if (panels_.dtype == DType::kBF16 && !UsesOneDnn(tokens)) {
    // bf16 weights multiply activations rounded to bf16 on every path (oneDNN takes them so, and
    // MatMulOneDnn rounds them itself), so a token's result does not depend on how many tokens
    // share the product: one precision for a sequence alone and in any batch. Rounded once here,
    // for all threads.
    const int64_t cols = panels_.cols;
    thread_local std::vector<float> rounded;
    rounded.resize(static_cast<size_t>(tokens * cols));
    float* out = rounded.data();
    auto round_tokens = [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) RoundToBf16(x + t * ldx, cols, out + t * cols);
    };
    if (UsesDecodeKernel(tokens)) {
      round_tokens(0, tokens);  // a few rows: not worth waking the other threads
    } else {
      pool.ParallelFor(tokens, round_tokens);
    }
    x = out;
    ldx = cols;
  }
  const int64_t panels = panels_.panels();
  auto run = [&](int64_t begin, int64_t end) { MatMulPanels(x, ldx, tokens, y, ldy, begin, end); };
  if (UsesDecodeKernel(tokens)) {
    // Streaming the weights is the whole cost of a decode product, and the two halves of a static
    // split finish apart when one core is slowed: about eight chunks per thread, taken in turn,
    // keep them together.
    pool.ParallelForDynamic(panels, std::max<int64_t>(1, panels / (8 * pool.num_threads())), run);
  } else if (UsesOneDnn(tokens)) {
    MatMulOneDnn(x, ldx, tokens, y, ldy, pool);
  } else {
    pool.ParallelFor(panels, run);  // one BLAS call per panel
  }
}

void WeightMatrix::MatMulOneDnn(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                                ThreadPool& pool) const {
  // oneDNN takes the activations dense, and bf16 weights times bf16 activations: copy or round
  // them once here, for all threads (vectorised and split over them: a 512-token prompt is 48M
  // values across the layers).
  const int64_t cols = panels_.cols;
  const void* activations = x;
  if (panels_.dtype == DType::kBF16) {
    thread_local std::vector<uint16_t> x_bf16;
    x_bf16.resize(static_cast<size_t>(tokens * cols));
    uint16_t* rounded = x_bf16.data();
    pool.ParallelFor(tokens, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) ConvertF32ToBf16(x + t * ldx, cols, rounded + t * cols);
    });
    activations = rounded;
  } else if (ldx != cols) {
    thread_local std::vector<float> x_dense;
    x_dense.resize(static_cast<size_t>(tokens * cols));
    for (int64_t t = 0; t < tokens; ++t)
      std::memcpy(x_dense.data() + t * cols, x + t * ldx, cols * sizeof(float));
    activations = x_dense.data();
  }
  // Where oneDNN refuses (it would run its reference loop), MatMulPanels multiplies the same
  // values: for bf16, the rounded activations widened back (exactly).
  auto fallback = [&](int64_t t0, int64_t t1, int64_t panel_begin, int64_t panel_end) {
    if (panels_.dtype != DType::kBF16) {
      MatMulPanels(x + t0 * ldx, ldx, t1 - t0, y + t0 * ldy, ldy, panel_begin, panel_end);
      return;
    }
    thread_local std::vector<float> widened;
    widened.resize(static_cast<size_t>((t1 - t0) * cols));
    ConvertToF32(DType::kBF16, static_cast<const uint16_t*>(activations) + t0 * cols,
                 widened.size(), widened.data());
    MatMulPanels(widened.data(), cols, t1 - t0, y + t0 * ldy, ldy, panel_begin, panel_end);
  };
  if (tokens >= kTokensPerThreadToSplitTokens * pool.num_threads()) {
    // A prompt: each thread multiplies its share of the tokens by the whole matrix, so its output
    // rows are dense (oneDNN writes them in place instead of into a copy) and oneDNN blocks a long
    // M. The threads walk the weights in step, so the second read mostly hits the shared L3, and it
    // is small against the arithmetic (512-token prompt, 130m, seven alternating runs: f32 +5%,
    // bf16 +8% over the split by panels).
    const size_t element = DTypeSize(panels_.dtype);
    pool.ParallelFor(tokens, [&](int64_t t0, int64_t t1) {
      const void* share = static_cast<const char*>(activations) + t0 * cols * element;
      if (!cpu::OneDnnMatMul(share, t1 - t0, Panel(0), panels_.rows, cols, panels_.dtype,
                             y + t0 * ldy, ldy)) {
        fallback(t0, t1, 0, panels_.panels());
      }
    });
    return;
  }
  // A decode batch: each thread its share of the panels, so the weights are read once.
  pool.ParallelFor(panels_.panels(), [&](int64_t begin, int64_t end) {
    const int64_t rows = std::min(end * kPanelRows, panels_.rows) - begin * kPanelRows;
    if (!cpu::OneDnnMatMul(activations, tokens, Panel(begin), rows, cols, panels_.dtype,
                           y + begin * kPanelRows, ldy)) {
      fallback(0, tokens, begin, end);
    }
  });
}

void WeightMatrix::MatMulPanels(const float* x, int64_t ldx, int64_t tokens, float* y, int64_t ldy,
                                int64_t begin, int64_t end) const {
  const int64_t cols = panels_.cols;
  thread_local std::vector<float> widened;  // a bf16 panel as f32, for OpenBLAS
  for (int64_t p = begin; p < end; ++p) {
    const int64_t rows = panels_.RowsInPanel(p);
    float* yp = y + p * kPanelRows;
    if (UsesDecodeKernel(tokens)) {
      // Decode: weights streamed once, straight from their stored dtype.
      if (panels_.dtype == DType::kF32) {
        cpu::SmallBatchGemm(x, ldx, tokens, static_cast<const float*>(Panel(p)), cols, rows, yp,
                            ldy);
      } else {
        cpu::SmallBatchGemm(x, ldx, tokens, static_cast<const uint16_t*>(Panel(p)), cols, rows, yp,
                            ldy);
      }
      continue;
    }
    // For OpenBLAS a panel is Wᵀ's [cols][64] block, row stride 64 (bf16: widened first).
    const float* w = static_cast<const float*>(Panel(p));
    if (panels_.dtype == DType::kBF16) {
      widened.resize(static_cast<size_t>(cols * kPanelRows));
      const auto* pairs = static_cast<const uint16_t*>(Panel(p));
      for (int64_t k = 0; k < cols; ++k) {
        for (int64_t r = 0; r < kPanelRows; ++r) {
          widened[k * kPanelRows + r] = Bf16ToF32(pairs[panels_.Offset(r, k)]);  // r in panel 0
        }
      }
      w = widened.data();
    }
    if (tokens == 1) {
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(cols), static_cast<int>(rows), 1.0f,
                  w, static_cast<int>(kPanelRows), x, 1, 0.0f, yp, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(tokens),
                  static_cast<int>(rows), static_cast<int>(cols), 1.0f, x, static_cast<int>(ldx), w,
                  static_cast<int>(kPanelRows), 0.0f, yp, static_cast<int>(ldy));
    }
  }
}

}  // namespace mambaserve
