// WeightMatrix::MatMul on every path (the decode kernel, oneDNN, OpenBLAS) and both weight dtypes,
// against a float64 product of the values each path is specified to multiply.
#include "engine/backend/cpu/weight_matrix.h"

#include <cmath>
#include <cstdlib>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cpu/onednn_matmul.h"
#include "engine/backend/cpu/small_batch_gemm.h"
#include "engine/backend/cpu/weight_panels.h"
#include "gtest/gtest.h"

namespace mambaserve {
namespace {

float RoundToBf16(float v) { return Bf16ToF32(F32ToBf16(v)); }

// A [rows][cols] f32 tensor viewing `w`, as a checkpoint would hold it.
TensorView F32Tensor(const std::vector<float>& w, int64_t rows, int64_t cols) {
  TensorView tensor;
  tensor.dtype = DType::kF32;
  tensor.shape = {rows, cols};
  tensor.data = reinterpret_cast<const unsigned char*>(w.data());
  tensor.nbytes = w.size() * sizeof(float);
  return tensor;
}

// Sets the path switches WeightMatrix reads when it is built, and clears them after.
class PathSwitches {
 public:
  PathSwitches(bool small_batch, bool onednn) {
    setenv("MAMBASERVE_CPU_SMALL_BATCH_GEMM", small_batch ? "1" : "0", 1);
    setenv("MAMBASERVE_CPU_ONEDNN", onednn ? "1" : "0", 1);
  }
  ~PathSwitches() {
    unsetenv("MAMBASERVE_CPU_SMALL_BATCH_GEMM");
    unsetenv("MAMBASERVE_CPU_ONEDNN");
  }
};

struct Path {
  std::string name;
  bool small_batch;
  bool onednn;
};

void PrintTo(const Path& path, std::ostream* os) { *os << path.name; }

class WeightMatrixTest : public ::testing::TestWithParam<Path> {};

TEST_P(WeightMatrixTest, MatchesFloat64ForEveryShapeAndDtype) {
  const Path& path = GetParam();
  if (path.small_batch && !cpu::SmallBatchGemmAvailable()) GTEST_SKIP() << "no AVX-512 here";
  if (path.onednn && !cpu::OneDnnAvailable()) GTEST_SKIP() << "oneDNN has no CPU engine here";
  std::mt19937 rng(5);
  std::normal_distribution<float> dist;
  ThreadPool pool(2);
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    for (const int64_t tokens : {1, 5, 8, 9, 16, 17, 32, 33, 40, 130}) {
      for (const int64_t rows : {1, 37, 64, 130}) {
        for (const int64_t cols : {5, 48, 77, 96}) {
          std::vector<float> w(rows * cols);
          for (float& v : w) v = dist(rng);
          const TensorView tensor = F32Tensor(w, rows, cols);
          WeightMatrix matrix;
          {
            PathSwitches switches(path.small_batch, path.onednn);
            matrix = WeightMatrix::FromTensor(tensor, rows, cols, dtype);
          }
          ASSERT_EQ(matrix.dtype(), dtype);
          const int64_t ldx = cols + 3, ldy = rows + 2;  // strided rows, as in the engine
          std::vector<float> x(tokens * ldx), y(tokens * ldy, -7.0f);
          for (float& v : x) v = dist(rng);
          matrix.MatMul(x.data(), ldx, tokens, y.data(), ldy, pool);

          // What every path multiplies: the stored weights, and for bf16 weights activations
          // rounded to bf16 too (one precision policy, whatever the path or token count).
          const bool rounds_x = dtype == DType::kBF16;
          const std::string where = std::string(DTypeName(dtype)) + " " + std::to_string(tokens) +
                                    "x" + std::to_string(rows) + "x" + std::to_string(cols);
          for (int64_t t = 0; t < tokens; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double expected = 0, magnitude = 0;
              for (int64_t k = 0; k < cols; ++k) {
                const double wv =
                    dtype == DType::kBF16 ? RoundToBf16(w[r * cols + k]) : w[r * cols + k];
                const double xv = rounds_x ? RoundToBf16(x[t * ldx + k]) : x[t * ldx + k];
                expected += wv * xv;
                magnitude += std::abs(wv * xv);
              }
              ASSERT_NEAR(y[t * ldy + r], expected, 1e-5 * magnitude + 1e-6) << where;
            }
            EXPECT_EQ(y[t * ldy + rows], -7.0f) << where << ": wrote past the rows";
          }
        }
      }
    }
  }
}

// On an AVX-512 CPU oneDNN must run its optimised kernels on the panels, not refuse them (the
// caller would fall back to OpenBLAS, several times slower): strided and dense outputs, a padded
// last panel, both dtypes, decode and prefill token counts.
TEST(OneDnnOnPanelsTest, OptimisedKernelsAcceptThePanels) {
  if (!cpu::OneDnnAvailable()) GTEST_SKIP() << "oneDNN has no CPU engine here";
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512: oneDNN may refuse";
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    for (const int64_t tokens : {9, 32, 512}) {
      for (const int64_t rows : {64, 130}) {
        const int64_t cols = 96;
        const cpu::WeightPanels layout{rows, cols, dtype};
        std::vector<uint16_t> panels(layout.elements() * DTypeSize(dtype) / 2, 0);
        std::vector<uint16_t> x(tokens * cols * 2, 0);
        for (const int64_t ldy : {rows, rows + 5}) {
          std::vector<float> y(tokens * ldy, 1.0f);
          EXPECT_TRUE(
              cpu::OneDnnMatMul(x.data(), tokens, panels.data(), rows, cols, dtype, y.data(), ldy))
              << DTypeName(dtype) << " " << tokens << "x" << rows << " ldy " << ldy;
          EXPECT_EQ(y[0], 0.0f);
        }
      }
    }
  }
}

// Rows come back as stored (bf16: rounded) from the panels, in every panel and at the padding's
// edge.
TEST(WeightMatrixRowsTest, RowToF32ReturnsEachStoredRow) {
  std::mt19937 rng(6);
  std::normal_distribution<float> dist;
  const int64_t rows = 130, cols = 77;
  std::vector<float> w(rows * cols);
  for (float& v : w) v = dist(rng);
  const TensorView tensor = F32Tensor(w, rows, cols);
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    const WeightMatrix matrix = WeightMatrix::FromTensor(tensor, rows, cols, dtype);
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      matrix.RowToF32(r, row.data());
      for (int64_t k = 0; k < cols; ++k) {
        const float expected =
            dtype == DType::kBF16 ? RoundToBf16(w[r * cols + k]) : w[r * cols + k];
        ASSERT_EQ(row[k], expected) << DTypeName(dtype) << " row " << r << " col " << k;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, WeightMatrixTest,
                         ::testing::Values(Path{"DecodeKernelThenOneDnn", true, true},
                                           Path{"DecodeKernelThenOpenBlas", true, false},
                                           Path{"OneDnnOnly", false, true},
                                           Path{"OpenBlasOnly", false, false}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mambaserve
