// The CPU mixer ops against straightforward double-precision loops written from the formulas.
#include "engine/backend/cpu/mixer_ops.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace mambaserve::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double SiluD(double x) { return x / (1.0 + std::exp(-x)); }

TEST(MixerOpsTest, RmsNormMatchesDefinition) {
  const int rows = 3, dim = 37;
  auto x = Random(rows * dim, 1, 3.0f), w = Random(dim, 2);
  std::vector<float> y(rows * dim);
  RmsNormRows(x.data(), dim, w.data(), y.data(), dim, rows, dim, 1e-5f);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * scale * w[i], 1e-5);
  }
}

TEST(MixerOpsTest, CausalConvWithStateMatchesFullConvolution) {
  const int len = 11, channels = 5, k = 4;
  auto x = Random(len * channels, 3), w = Random(channels * k, 4), b = Random(channels, 5);
  // Run as two chunks (6 + 5 tokens) carrying the state.
  std::vector<float> state(channels * (k - 1), 0.0f), out(len * channels);
  CausalConv1dSilu(x.data(), channels, 6, w.data(), b.data(), k, state.data(), out.data(), channels,
                   0, channels);
  CausalConv1dSilu(x.data() + 6 * channels, channels, 5, w.data(), b.data(), k, state.data(),
                   out.data() + 6 * channels, channels, 0, channels);
  for (int c = 0; c < channels; ++c) {
    for (int t = 0; t < len; ++t) {
      double acc = b[c];
      for (int j = 0; j < k; ++j) {
        const int src = t - k + 1 + j;
        if (src >= 0) acc += double(w[c * k + j]) * x[src * channels + c];
      }
      EXPECT_NEAR(out[t * channels + c], SiluD(acc), 1e-5) << "c=" << c << " t=" << t;
    }
    for (int j = 0; j < k - 1; ++j)
      EXPECT_EQ(state[c * (k - 1) + j], x[(len - k + 1 + j) * channels + c]);
  }
}

// The scan over channels [c_begin, c_end) of E against the float64 recurrence; channels outside
// the range are left untouched.
void ExpectScanMatchesRecurrence(int len, int E, int N, int c_begin, int c_end) {
  const int ld_bc = 2 * N + 3;
  auto x = Random(len * E, 6), z = Random(len * E, 7), bc = Random(len * ld_bc, 8),
       d = Random(E, 9);
  std::vector<float> dt(len * E), a(E * N);
  std::mt19937 rng(10);
  for (float& v : dt) v = 0.001f + 0.2f * (rng() % 1000) / 1000.0f;
  for (int e = 0; e < E; ++e)
    for (int n = 0; n < N; ++n) a[e * N + n] = -(n + 1.0f) * (1.0f + 0.1f * e);
  std::vector<float> state(E * N, 0.0f), y(len * E, -7.0f);
  SelectiveScan(x.data(), dt.data(), bc.data(), bc.data() + N, ld_bc, a.data(), d.data(), z.data(),
                E, len, E, N, state.data(), y.data(), c_begin, c_end);
  std::vector<double> h(E * N, 0.0);
  for (int t = 0; t < len; ++t) {
    for (int e = c_begin; e < c_end; ++e) {
      double acc = 0;
      for (int n = 0; n < N; ++n) {
        double& hv = h[e * N + n];
        hv = std::exp(double(dt[t * E + e]) * a[e * N + n]) * hv +
             double(dt[t * E + e]) * x[t * E + e] * bc[t * ld_bc + n];
        acc += hv * bc[t * ld_bc + N + n];
      }
      const double expected = (acc + double(d[e]) * x[t * E + e]) * SiluD(z[t * E + e]);
      ASSERT_NEAR(y[t * E + e], expected, 1e-5) << "N=" << N << " t=" << t << " e=" << e;
    }
    for (int e = 0; e < E; ++e) {
      if (e < c_begin || e >= c_end) {
        ASSERT_EQ(y[t * E + e], -7.0f) << "wrote channel " << e;
      }
    }
  }
  for (int i = 0; i < E * N; ++i) EXPECT_NEAR(state[i], h[i], 1e-5);
}

TEST(MixerOpsTest, SelectiveScanMatchesRecurrence) { ExpectScanMatchesRecurrence(9, 6, 5, 0, 6); }

// d_state 16 takes the vector paths: one channel's 16 states at a time, and 16 channels' sums
// reduced together. Ranges that start and end off a multiple of 16 leave channels for the
// one-at-a-time path; decode (one token) and prefill both.
TEST(MixerOpsTest, SelectiveScanWithSixteenStatesMatchesRecurrence) {
  for (int len : {1, 7}) {
    ExpectScanMatchesRecurrence(len, 48, 16, 0, 48);
    ExpectScanMatchesRecurrence(len, 48, 16, 3, 43);
    ExpectScanMatchesRecurrence(len, 48, 16, 5, 12);
  }
}

}  // namespace
}  // namespace mambaserve::cpu

#include "engine/backend/cpu/fast_math.h"

namespace mambaserve::cpu {
namespace {

TEST(FastExpTest, RelativeErrorWithinThreeUlpOverTheScanRange) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.0137) {
    const double exact = std::exp(x);
    const double rel = std::fabs(FastExp(static_cast<float>(x)) - exact) / exact;
    // Compare to float's own rounding of x: the error budget is for exp, not for the input.
    const double rel_input = std::fabs(std::exp(double(static_cast<float>(x))) - exact) / exact;
    worst = std::max(worst, rel - rel_input);
  }
  EXPECT_LT(worst, 3.6e-7);
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_EQ(FastExp(-1000.0f), 0.0f);
  EXPECT_GT(FastExp(88.0f), 1e38f);
  // NaN stays NaN (and, under UBSan, converts nothing undefined on the way).
  EXPECT_TRUE(std::isnan(FastExp(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace mambaserve::cpu

namespace mambaserve::cpu {
namespace {

TEST(FastMathTest, Log1pSoftplusAndSiluMatchDoublePrecision) {
  double worst_log1p = 0, worst_softplus = 0, worst_silu = 0;
  for (double u = 1e-9; u < 1e30; u *= 1.037) {
    const float uf = static_cast<float>(u);
    worst_log1p = std::max(
        worst_log1p, std::fabs(FastLog1p(uf) - std::log1p(double(uf))) / std::log1p(double(uf)));
  }
  for (double x = -80; x <= 30; x += 0.0071) {
    const float xf = static_cast<float>(x);
    const double sp = xf <= 20 ? std::log1p(std::exp(double(xf))) : xf;
    worst_softplus = std::max(worst_softplus, std::fabs(FastSoftplus(xf) - sp) / sp);
    const double silu = xf / (1 + std::exp(-double(xf)));
    worst_silu =
        std::max(worst_silu, std::fabs(FastSilu(xf) - silu) / std::max(1e-30, std::fabs(silu)));
  }
  EXPECT_LT(worst_log1p, 5e-7);
  EXPECT_LT(worst_softplus, 6e-7);
  EXPECT_LT(worst_silu, 6e-7);
  EXPECT_EQ(FastSoftplus(25.0f), 25.0f);
}

TEST(MixerOpsTest, SoftplusWithBiasMatchesDefinition) {
  const int rows = 3, dim = 37;
  auto dt = Random(rows * dim, 11, 4.0f), bias = Random(dim, 12, 2.0f);
  auto out = dt;
  SoftplusWithBias(out.data(), bias.data(), rows, dim);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < dim; ++i) {
      const double v = double(dt[r * dim + i]) + bias[i];
      EXPECT_NEAR(out[r * dim + i], v <= 20 ? std::log1p(std::exp(v)) : v, 1e-6) << r << "," << i;
    }
}

}  // namespace
}  // namespace mambaserve::cpu
