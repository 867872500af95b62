// The __host__ __device__ math of kernels/mamba_math.h (what the CUDA kernels and the CPU backend
// both run) against double-precision formulas. Runs everywhere, no GPU needed.
#include "kernels/mamba_math.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace mambaserve::math {
namespace {

double SoftplusD(double x) { return std::log1p(std::exp(x)); }
double SiluD(double x) { return x / (1.0 + std::exp(-x)); }

// |got - want| <= rel * |want| + abs
void ExpectClose(double got, double want, double rel, double abs, const char* what, double at) {
  EXPECT_LE(std::fabs(got - want), rel * std::fabs(want) + abs)
      << what << "(" << at << "): got " << got << ", want " << want;
}

TEST(MambaMathTest, SoftplusMatchesLog1pExpAndIsIdentityAbove20) {
  for (double x = -30.0; x <= 19.99; x += 0.37) {
    ExpectClose(Softplus(static_cast<float>(x)), SoftplusD(static_cast<float>(x)), 2e-6, 1e-30,
                "Softplus", x);
  }
  // threshold 20 (torch's default): exactly the input above, never clamped.
  EXPECT_EQ(Softplus(20.5f), 20.5f);
  EXPECT_EQ(Softplus(1e6f), 1e6f);
  ExpectClose(Softplus(20.0f), SoftplusD(20.0), 1e-6, 0, "Softplus", 20.0);
  // Tiny dt stays positive and accurate: log1p, not log(1 + exp(x)).
  EXPECT_GT(Softplus(-80.0f), 0.0f);
  ExpectClose(Softplus(-80.0f), SoftplusD(-80.0), 1e-5, 0, "Softplus", -80.0);
}

TEST(MambaMathTest, DtSoftplusAddsTheBiasFirst) {
  for (double x = -10; x <= 10; x += 0.5) {
    ExpectClose(DtSoftplus(static_cast<float>(x), -4.6f), SoftplusD(static_cast<float>(x) + -4.6f),
                2e-6, 0, "DtSoftplus", x);
  }
}

TEST(MambaMathTest, SiluMatchesDefinition) {
  for (double x = -40.0; x <= 40.0; x += 0.31) {
    ExpectClose(Silu(static_cast<float>(x)), SiluD(static_cast<float>(x)), 2e-6, 1e-30, "Silu", x);
  }
}

TEST(MambaMathTest, RmsScaleMatchesDefinition) {
  for (int n : {1, 16, 4096}) {
    for (double ss : {0.0, 1e-3, 1.0, 12345.0}) {
      ExpectClose(RmsScale(static_cast<float>(ss), n, 1e-5f), 1.0 / std::sqrt(ss / n + 1e-5), 1e-6,
                  0, "RmsScale", ss);
    }
  }
}

TEST(MambaMathTest, ScanStateStepAndGatedOutputMatchTheRecurrence) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(-2, 2);
  for (int i = 0; i < 200; ++i) {
    const float h = u(rng), a = -std::fabs(u(rng)) * 8, b = u(rng), dt = std::fabs(u(rng)) * 0.1,
                x = u(rng);
    const double want = std::exp(double(dt) * a) * h + double(dt) * x * b;
    ExpectClose(ScanStateStep(h, a, b, dt, dt * x), want, 1e-6, 1e-7, "ScanStateStep", i);
    const float y = u(rng), d = u(rng), z = u(rng) * 5;
    ExpectClose(GatedOutput(y, d, x, z), (double(y) + double(d) * x) * SiluD(z), 1e-6, 1e-7,
                "GatedOutput", i);
  }
}

TEST(MambaMathTest, ScanStateStepOverAWholeStateVector) {
  const int n = 16;
  std::vector<float> h(n), a(n), b(n), c(n);
  std::vector<double> hd(n);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int i = 0; i < n; ++i) {
    h[i] = nd(rng);
    hd[i] = h[i];
    a[i] = -(i + 1.0f);
    b[i] = nd(rng);
    c[i] = nd(rng);
  }
  const float dt = 0.03f, x = 1.7f;
  // As the scan kernels do it: one ScanStateStep per state, y = h . C.
  float y = 0.0f;
  for (int i = 0; i < n; ++i) {
    h[i] = ScanStateStep(h[i], a[i], b[i], dt, dt * x);
    y += h[i] * c[i];
  }
  double yd = 0;
  for (int i = 0; i < n; ++i) {
    hd[i] = std::exp(double(dt) * a[i]) * hd[i] + double(dt) * x * b[i];
    yd += hd[i] * c[i];
    ExpectClose(h[i], hd[i], 1e-6, 1e-7, "h", i);
  }
  ExpectClose(y, yd, 1e-5, 1e-6, "y", 0);
}

TEST(MambaMathTest, ConvSiluIsBiasPlusDotThenSilu) {
  const float window[4] = {0.5f, -1.25f, 2.0f, 0.75f}, weight[4] = {0.1f, -0.4f, 0.3f, 0.9f};
  double acc = 0.2;
  for (int k = 0; k < 4; ++k) acc += double(window[k]) * weight[k];
  ExpectClose(ConvSilu(window, weight, 0.2f, 4), SiluD(acc), 1e-6, 1e-7, "ConvSilu", 0);
  static_assert(kMaxConvWidth >= 4 && kMaxStateSize >= 16, "Mamba's K = 4 and N = 16 must fit");
}

}  // namespace
TEST(MambaMathTest, ArgMaxPrefersLargerNumbersThenLowerIdsAndNeverNaN) {
  const float nan = std::nanf("");
  EXPECT_TRUE(math::ArgMaxPrefers(2.0f, 5, 1.0f, 0));
  EXPECT_FALSE(math::ArgMaxPrefers(1.0f, 0, 2.0f, 5));
  EXPECT_TRUE(math::ArgMaxPrefers(1.0f, 3, 1.0f, 4));  // tie: lower id
  EXPECT_FALSE(math::ArgMaxPrefers(1.0f, 4, 1.0f, 3));
  EXPECT_TRUE(math::ArgMaxPrefers(-INFINITY, 9, nan, 0));  // any number beats NaN
  EXPECT_FALSE(math::ArgMaxPrefers(nan, 0, -INFINITY, 9));
  EXPECT_TRUE(math::ArgMaxPrefers(nan, 1, nan, 2));     // NaN against NaN: lower id
  EXPECT_FALSE(math::ArgMaxPrefers(1.0f, 3, 1.0f, 3));  // strict
}

}  // namespace mambaserve::math
