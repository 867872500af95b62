#include "engine/backend/cpu/small_batch_gemm.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace mambaserve::cpu {
namespace {

TEST(SmallBatchGemmTest, MatchesDoublePrecisionForEveryTileShapeAndColumnTail) {
  if (!SmallBatchGemmAvailable()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  for (int64_t tokens = 1; tokens <= kSmallBatchMaxTokens; ++tokens) {
    for (int64_t rows : {1, 3, 4, 9}) {
      for (int64_t cols : {5, 16, 48, 77}) {
        const int64_t ldx = cols + 3, ldy = rows + 2;  // strided rows, as in the engine
        std::vector<float> x(tokens * ldx), w(rows * cols), y(tokens * ldy, -7.0f);
        for (float& v : x) v = dist(rng);
        for (float& v : w) v = dist(rng);
        SmallBatchGemm(x.data(), ldx, tokens, w.data(), rows, cols, y.data(), ldy);
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double expected = 0;
            for (int64_t k = 0; k < cols; ++k) expected += double(x[t * ldx + k]) * w[r * cols + k];
            ASSERT_NEAR(y[t * ldy + r], expected, 1e-4) << tokens << "x" << rows << "x" << cols;
          }
          EXPECT_EQ(y[t * ldy + rows], -7.0f);  // nothing written past the rows
        }
      }
    }
  }
}

// bf16 weights are widened exactly: the result is the f32 product with the bf16 values.
TEST(SmallBatchGemmTest, Bf16WeightsMultiplyAsTheirExactF32Values) {
  if (!SmallBatchGemmAvailable()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(4);
  std::normal_distribution<float> dist;
  for (int64_t tokens = 1; tokens <= kSmallBatchMaxTokens; ++tokens) {
    for (int64_t rows : {1, 4, 9}) {
      for (int64_t cols : {5, 16, 77}) {
        const int64_t ldx = cols + 1, ldy = rows + 1;
        std::vector<float> x(tokens * ldx), y(tokens * ldy, -7.0f);
        std::vector<uint16_t> w(rows * cols);
        for (float& v : x) v = dist(rng);
        for (uint16_t& v : w) v = F32ToBf16(dist(rng));
        SmallBatchGemm(x.data(), ldx, tokens, w.data(), rows, cols, y.data(), ldy);
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double expected = 0;
            for (int64_t k = 0; k < cols; ++k) {
              expected += double(x[t * ldx + k]) * Bf16ToF32(w[r * cols + k]);
            }
            ASSERT_NEAR(y[t * ldy + r], expected, 1e-4) << tokens << "x" << rows << "x" << cols;
          }
          EXPECT_EQ(y[t * ldy + rows], -7.0f);
        }
      }
    }
  }
}

}  // namespace
}  // namespace mambaserve::cpu
