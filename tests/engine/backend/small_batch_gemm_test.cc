#include "engine/backend/cpu/small_batch_gemm.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace mambaserve::cpu {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// One panel written out by hand from its definition (weight_panels.h): 64 rows, column-major for
// f32; bf16 in pairs of columns, each row's two values side by side. Everything that is not a
// real weight (rows past `rows`, columns past `cols`) is NaN, so reading it into a result shows.
std::vector<float> F32Panel(const std::vector<float>& w, int64_t rows, int64_t cols,
                            int64_t padded_cols) {
  std::vector<float> panel(padded_cols * 64, kNaN);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) panel[k * 64 + r] = w[r * cols + k];
  return panel;
}

std::vector<uint16_t> Bf16Panel(const std::vector<uint16_t>& w, int64_t rows, int64_t cols,
                                int64_t padded_cols) {
  std::vector<uint16_t> panel(padded_cols * 64, F32ToBf16(kNaN));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) panel[(k / 2) * 128 + r * 2 + k % 2] = w[r * cols + k];
  return panel;
}

// x with NaN in every row's padding past `cols`: the kernel must not read it.
std::vector<float> Activations(int64_t tokens, int64_t cols, int64_t ldx, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> x(tokens * ldx, kNaN);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t k = 0; k < cols; ++k) x[t * ldx + k] = dist(rng);
  return x;
}

template <typename WeightToDouble>
void ExpectProduct(const std::vector<float>& x, int64_t ldx, int64_t tokens, int64_t rows,
                   int64_t cols, const std::vector<float>& y, int64_t ldy, WeightToDouble weight) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double expected = 0, magnitude = 0;
      for (int64_t k = 0; k < cols; ++k) {
        expected += double{x[t * ldx + k]} * weight(r, k);
        magnitude += std::abs(double{x[t * ldx + k]} * weight(r, k));
      }
      ASSERT_NEAR(y[t * ldy + r], expected, 1e-6 * magnitude + 1e-6)
          << tokens << "x" << rows << "x" << cols << " token " << t << " row " << r;
    }
    for (int64_t r = rows; r < ldy; ++r) {
      ASSERT_EQ(y[t * ldy + r], -7.0f) << "wrote past the panel's rows: " << tokens << "x" << rows;
    }
  }
}

TEST(SmallBatchGemmTest, F32MatchesFloat64ForEveryTileShapeAndTail) {
  if (!SmallBatchGemmAvailable()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  for (int64_t tokens = 1; tokens <= kSmallBatchMaxTokens; ++tokens) {
    for (int64_t rows : {1, 17, 64}) {
      for (int64_t cols : {5, 16, 48, 77}) {
        const int64_t ldx = cols + 3, ldy = 64 + 2;  // strided rows, as in the engine
        std::vector<float> w(rows * cols), y(tokens * ldy, -7.0f);
        for (float& v : w) v = dist(rng);
        const std::vector<float> x = Activations(tokens, cols, ldx, rng);
        const std::vector<float> panel = F32Panel(w, rows, cols, (cols + 15) / 16 * 16);
        SmallBatchGemm(x.data(), ldx, tokens, panel.data(), cols, rows, y.data(), ldy);
        ExpectProduct(x, ldx, tokens, rows, cols, y, ldy,
                      [&](int64_t r, int64_t k) { return double{w[r * cols + k]}; });
      }
    }
  }
}

// bf16 weights are widened exactly: the result is the f32 product with the bf16 values (the
// activations are not rounded), including a last, unpaired column.
TEST(SmallBatchGemmTest, Bf16WeightsMultiplyAsTheirExactF32Values) {
  if (!SmallBatchGemmAvailable()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(4);
  std::normal_distribution<float> dist;
  for (int64_t tokens = 1; tokens <= kSmallBatchMaxTokens; ++tokens) {
    for (int64_t rows : {1, 17, 64}) {
      for (int64_t cols : {5, 16, 48, 77}) {
        const int64_t ldx = cols + 1, ldy = 64 + 1;
        std::vector<float> y(tokens * ldy, -7.0f);
        std::vector<uint16_t> w(rows * cols);
        for (uint16_t& v : w) v = F32ToBf16(dist(rng));
        const std::vector<float> x = Activations(tokens, cols, ldx, rng);
        const std::vector<uint16_t> panel = Bf16Panel(w, rows, cols, (cols + 31) / 32 * 32);
        SmallBatchGemm(x.data(), ldx, tokens, panel.data(), cols, rows, y.data(), ldy);
        ExpectProduct(x, ldx, tokens, rows, cols, y, ldy,
                      [&](int64_t r, int64_t k) { return double{Bf16ToF32(w[r * cols + k])}; });
      }
    }
  }
}

}  // namespace
}  // namespace mambaserve::cpu
