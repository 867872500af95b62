// Every CUDA op against its CPU twin (engine/cpu/mixer_ops.h, WeightMatrix, plain loops), over
// packed chunks with scattered slots, fresh and padding rows, f32 and bf16 outputs. Skips without a
// GPU. Tolerances: f32 outputs 1e-5 relative (+1e-5 absolute); bf16 outputs are compared with the
// CPU value rounded to bf16, within one bf16 ulp of it (a value near a rounding boundary may round
// either way).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "engine/backend/cpu/mixer_ops.h"
#include "engine/backend/greedy.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"
#include "kernels/argmax.h"
#include "kernels/bcdt_rms_norm.h"
#include "kernels/causal_conv1d.h"
#include "kernels/embedding.h"
#include "kernels/mamba_math.h"
#include "kernels/rms_norm.h"
#include "kernels/selective_scan.h"
#include "kernels/skinny_gemm.h"
#include "tests/testing/cuda_test_util.h"

namespace mambaserve::kernels {

// For gtest's parameter names (found by ADL, so outside the anonymous namespace).
void PrintTo(GemmType t, std::ostream* os) { *os << (t == GemmType::kF32 ? "f32" : "bf16"); }

namespace {

using testing::DeviceBuffer;

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]);
  return out;
}

float RoundBf16(float v) { return Bf16ToF32(F32ToBf16(v)); }

// Expects got[i] ≈ want[i] with the tolerance of `type`'s output.
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, GemmType type,
                const char* what, double rel = 1e-5, double abs = 1e-5) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 10; ++i) {
    double w = want[i], tol = rel * std::fabs(w) + abs;
    if (type == GemmType::kBF16) {
      w = RoundBf16(want[i]);
      int exponent = 0;
      std::frexp(w,
                 &exponent);  // |w| in [2^(exponent-1), 2^exponent): a bf16 ulp is 2^(exponent-8)
      tol = std::ldexp(1.0, exponent - 8) + abs + rel * std::fabs(w);
    }
    if (!(std::fabs(got[i] - w) <= tol)) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << w;
      ++failures;
    }
  }
}

// A device output of `n` elements in `type`, read back as fp32.
class TypedOutput {
 public:
  TypedOutput(GemmType type, size_t n)
      : type_(type), f32_(type == GemmType::kF32 ? n : 0), b16_(type == GemmType::kBF16 ? n : 0) {}
  void* get() {
    return type_ == GemmType::kF32 ? static_cast<void*>(f32_.get())
                                   : static_cast<void*>(b16_.get());
  }
  std::vector<float> Download() const {
    if (type_ == GemmType::kF32) return f32_.Download();
    std::vector<float> out;
    for (uint16_t b : b16_.Download()) out.push_back(Bf16ToF32(b));
    return out;
  }

 private:
  GemmType type_;
  DeviceBuffer<float> f32_;
  DeviceBuffer<uint16_t> b16_;
};

// Chunks of a packed pass, on host and device.
struct Chunks {
  std::vector<int32_t> row_begin, len, slot, fresh;
  int64_t rows = 0;
  Chunks(std::vector<int32_t> lens, std::vector<int32_t> slots, std::vector<int32_t> fresh_flags)
      : len(std::move(lens)), slot(std::move(slots)), fresh(std::move(fresh_flags)) {
    for (int32_t l : len) {
      row_begin.push_back(static_cast<int32_t>(rows));
      rows += l;
    }
    d_row_begin = std::make_unique<DeviceBuffer<int32_t>>(row_begin);
    d_len = std::make_unique<DeviceBuffer<int32_t>>(len);
    d_slot = std::make_unique<DeviceBuffer<int32_t>>(slot);
    d_fresh = std::make_unique<DeviceBuffer<int32_t>>(fresh);
  }
  ChunkTable table() const {
    return ChunkTable{d_row_begin->get(),
                      d_len->get(),
                      d_slot->get(),
                      d_fresh->get(),
                      static_cast<int>(len.size()),
                      *std::max_element(len.begin(), len.end())};
  }
  std::unique_ptr<DeviceBuffer<int32_t>> d_row_begin, d_len, d_slot, d_fresh;
};

class CudaOpsTest : public ::testing::TestWithParam<GemmType> {
 protected:
  void SetUp() override { MS_SKIP_WITHOUT_CUDA(); }
  GemmType type() const { return GetParam(); }
};

TEST_P(CudaOpsTest, EmbeddingGathersRows) {
  const int64_t V = 50, D = 70;
  const auto table = Random(V * D, 1);
  const std::vector<int32_t> tokens = {3, 49, 0, 3, 17};
  DeviceBuffer<float> t32(table);
  DeviceBuffer<uint16_t> t16(ToBf16(table));
  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<float> out(tokens.size() * D);
  EmbeddingParams p;
  p.table = type() == GemmType::kF32 ? static_cast<const void*>(t32.get()) : t16.get();
  p.table_type = type();
  p.tokens = d_tokens.get();
  p.out = out.get();
  p.rows = static_cast<int64_t>(tokens.size());
  p.dim = D;
  ASSERT_EQ(InvokeEmbedding(p, nullptr), 0);
  std::vector<float> want;
  for (int32_t t : tokens)
    for (int64_t i = 0; i < D; ++i)
      want.push_back(type() == GemmType::kF32 ? table[t * D + i] : RoundBf16(table[t * D + i]));
  ExpectNear(out.Download(), want, GemmType::kF32, "embedding", 0, 0);  // exact either way
}

TEST_P(CudaOpsTest, ResidualRmsNormAddsThenNormalises) {
  const int64_t rows = 5, D = 300;
  auto residual = Random(rows * D, 2, 3.0f);
  const auto delta = Random(rows * D, 3), bias = Random(D, 4, 0.1f),
             weight = Random(D, 5, 0.1f, 1.0f);
  DeviceBuffer<float> d_res(residual), d_delta(delta), d_bias(bias), d_w(weight);
  TypedOutput out(type(), rows * D);
  ResidualRmsNormParams p;
  p.residual = d_res.get();
  p.delta = d_delta.get();
  p.delta_bias = d_bias.get();
  p.weight = d_w.get();
  p.out = out.get();
  p.out_type = type();
  p.out_rows = rows;
  p.dim = D;
  p.eps = 1e-5f;
  ASSERT_EQ(InvokeResidualRmsNorm(p, nullptr), 0);
  for (int64_t i = 0; i < rows * D; ++i) residual[i] += delta[i] + bias[i % D];
  std::vector<float> want(rows * D);
  cpu::RmsNormRows(residual.data(), D, weight.data(), want.data(), D, rows, D, 1e-5f);
  ExpectNear(d_res.Download(), residual, GemmType::kF32, "residual", 1e-6, 1e-6);
  ExpectNear(out.Download(), want, type(), "normalised");

  // Gather mode (norm_f): rows {3, 0} of 4 output slots, count read from the device.
  DeviceBuffer<int32_t> index(std::vector<int32_t>{3, 0, 0, 0}), count(std::vector<int32_t>{2});
  TypedOutput gathered(type(), 4 * D);
  p.delta = nullptr;
  p.out = gathered.get();
  p.row_index = index.get();
  p.out_rows_device = count.get();
  p.out_rows = 4;
  ASSERT_EQ(InvokeResidualRmsNorm(p, nullptr), 0);
  const auto g = gathered.Download();
  ExpectNear({g.begin(), g.begin() + D}, {want.begin() + 3 * D, want.begin() + 4 * D}, type(),
             "gathered row 3");
  ExpectNear({g.begin() + D, g.begin() + 2 * D}, {want.begin(), want.begin() + D}, type(),
             "gathered row 0");
  ExpectNear({g.begin() + 2 * D, g.end()}, std::vector<float>(2 * D, 0.0f), GemmType::kF32,
             "rows past the count", 0, 0);
}

TEST_P(CudaOpsTest, BcdtRmsNormNormalisesEachSegment) {
  for (bool normalize : {true, false}) {
    const int64_t rows = 4, R = 12, N = 16, ld = R + 2 * N + 3;
    auto x_dbl = Random(rows * ld, 6, 2.0f);
    DeviceBuffer<float> d_x(x_dbl);
    TypedOutput dt_low(type(), rows * R);
    BcdtRmsNormParams p;
    p.x_dbl = d_x.get();
    p.ld_x_dbl = ld;
    p.dt_low = dt_low.get();
    p.ld_dt_low = R;
    p.dt_low_type = type();
    p.rows = rows;
    p.dt_rank = R;
    p.d_state = N;
    p.normalize = normalize;
    p.eps = 1e-6f;
    ASSERT_EQ(InvokeBcdtRmsNorm(p, nullptr), 0);
    std::vector<float> want = x_dbl;
    if (normalize) {
      cpu::RmsNormRows(want.data(), ld, nullptr, want.data(), ld, rows, R, 1e-6f);
      cpu::RmsNormRows(want.data() + R, ld, nullptr, want.data() + R, ld, rows, N, 1e-6f);
      cpu::RmsNormRows(want.data() + R + N, ld, nullptr, want.data() + R + N, ld, rows, N, 1e-6f);
    }
    std::vector<float> want_dt;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < R; ++j) want_dt.push_back(want[r * ld + j]);
    auto got = d_x.Download();
    for (int64_t r = 0; r < rows; ++r)  // dt_low columns of x_dbl are left as they were
      for (int64_t j = 0; j < R; ++j) got[r * ld + j] = want[r * ld + j] = x_dbl[r * ld + j];
    ExpectNear(got, want, GemmType::kF32, normalize ? "B/C normalised" : "B/C untouched");
    ExpectNear(dt_low.Download(), want_dt, type(), "dt_low");
  }
}

// Conv state pool of `slots` slots with 2 layers each; the test works on layer 1.
struct ConvSetup {
  static constexpr int64_t kLayers = 2;
  int64_t E, K, slots;
  int64_t per_layer() const { return E * (K - 1); }
  int64_t slot_stride() const { return kLayers * per_layer(); }
};

// Prefill chunks: shorter than the state (1, 2 with K = 4), one tile (37, exactly 128), and three
// tiles, the last partial (300); fresh, continuing and padding (slot -1).
void RunConvTest(GemmType type, bool decode, int64_t k_conv = 4) {
  const ConvSetup s{70, k_conv, 8};
  const Chunks chunks =
      decode ? Chunks({1, 1, 1, 1}, {5, -1, 2, 0}, {0, 0, 1, 0})
             : Chunks({1, 5, 37, 3, 2, 300, 128}, {4, 0, 2, 7, 1, 3, -1}, {0, 1, 0, 0, 0, 0, 0});
  const int64_t rows = chunks.rows, E = s.E, K = s.K, ld_x = 2 * E + 5;
  const auto x = Random(rows * ld_x, 7), weight = Random(E * K, 8, 0.5f), bias = Random(E, 9, 0.5f),
             x_bias = Random(E, 10, 0.1f);
  auto pool = Random(s.slots * s.slot_stride(), 11);
  DeviceBuffer<float> d_x(x), d_w(weight), d_b(bias), d_xb(x_bias), d_pool(pool), out(rows * E);
  TypedOutput out_gemm(type, rows * E);
  CausalConv1dParams p;
  p.x = d_x.get();
  p.ld_x = ld_x;
  p.x_bias = d_xb.get();
  p.weight = d_w.get();
  p.bias = d_b.get();
  p.conv_state = d_pool.get() + s.per_layer();  // layer 1
  p.slot_stride = s.slot_stride();
  p.chunks = chunks.table();
  p.out = out.get();
  p.ld_out = E;
  p.out_gemm = out_gemm.get();
  p.ld_out_gemm = E;
  p.out_gemm_type = type;
  p.d_inner = E;
  p.k_conv = static_cast<int>(K);
  ASSERT_EQ(decode ? InvokeCausalConv1dUpdate(p, nullptr) : InvokeCausalConv1dPrefill(p, nullptr),
            0);

  // CPU twin per chunk; the in_proj bias is added to x first, as the CPU backend does.
  std::vector<float> x_biased(rows * E), want(rows * E);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < E; ++c) x_biased[r * E + c] = x[r * ld_x + c] + x_bias[c];
  std::vector<float> want_pool = pool;
  for (size_t i = 0; i < chunks.len.size(); ++i) {
    std::vector<float> scratch_state(E * (K - 1), 0.0f);
    float* state = chunks.slot[i] >= 0
                       ? want_pool.data() + chunks.slot[i] * s.slot_stride() + s.per_layer()
                       : scratch_state.data();
    if (chunks.fresh[i]) std::fill_n(state, E * (K - 1), 0.0f);
    cpu::CausalConv1dSilu(x_biased.data() + chunks.row_begin[i] * E, E, chunks.len[i],
                          weight.data(), bias.data(), K, state,
                          want.data() + chunks.row_begin[i] * E, E, 0, E);
  }
  ExpectNear(out.Download(), want, GemmType::kF32, "conv out");
  ExpectNear(out_gemm.Download(), want, type, "conv out (GEMM copy)");
  ExpectNear(d_pool.Download(), want_pool, GemmType::kF32, "conv state pool", 1e-6, 1e-6);
}

TEST_P(CudaOpsTest, CausalConv1dPrefillMatchesCpu) { RunConvTest(type(), false); }
TEST_P(CudaOpsTest, CausalConv1dUpdateMatchesCpu) { RunConvTest(type(), true); }
TEST_P(CudaOpsTest, CausalConv1dOtherWidths) {
  for (int64_t k : {2, 3, 8}) {
    SCOPED_TRACE(k);
    RunConvTest(type(), false, k);
    RunConvTest(type(), true, k);
  }
}

// slot_padding: floats between one slot's state and the next beyond its own (17: rows of the
// state are not 16-byte aligned, and the decode kernel takes its scalar path; 0: the vector path
// when N is 4, 8, 16 or 32). E = 300 spans three decode blocks, the last partly.
// normalize_bc (decode only): B and C go in raw and the kernel applies Falcon-Mamba's weightless
// RMSNorm to each; the CPU twin gets them normalised on the host.
// Prefill lengths: kShort stays under kChunkedScanMinTokens (the token-sequential kernel alone);
// kLong has chunks past it (the chunked scan: several tiles, the last partial) beside chunks under
// it, one a token short; kLongUnknown is kLong without ChunkTable::max_len (both kernels launched
// either way, each taking its own chunks).
enum class ScanLengths { kShort, kLong, kLongUnknown };

void RunScanTest(GemmType type, bool decode, int64_t N, int64_t slot_padding = 17,
                 bool normalize_bc = false, ScanLengths lengths = ScanLengths::kShort) {
  const int64_t E = decode ? 300 : 40, layers = 2, slots = 8,
                slot_stride = layers * E * N + slot_padding;
  const Chunks chunks = decode ? Chunks({1, 1, 1, 1, 1}, {5, -1, 2, 0, 7}, {0, 0, 1, 0, 0})
                        : lengths == ScanLengths::kShort
                            ? Chunks({1, 5, 70, 3}, {4, 0, 2, 7}, {0, 1, 0, 0})
                            : Chunks({1, 300, 600, 3, -1 + kChunkedScanMinTokens, 40},
                                     {4, 0, 2, -1, 5, 7}, {0, 1, 0, 0, 1, 0});
  const int64_t rows = chunks.rows, ld_bc = 3 + 2 * N + 1, ld_z = 2 * E;
  const auto x = Random(rows * E, 12), dt_raw = Random(rows * E, 13, 1.0f),
             dt_bias = Random(E, 14, 0.5f, -4.0f), bc = Random(rows * ld_bc, 15),
             z = Random(rows * ld_z, 16), z_bias = Random(E, 17, 0.1f),
             d = Random(E, 18, 0.2f, 1.0f);
  std::vector<float> a(E * N);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n) a[e * N + n] = -(n + 1.0f) * (1.0f + 0.05f * e);
  auto pool = Random(slots * slot_stride, 19);
  DeviceBuffer<float> d_x(x), d_dt(dt_raw), d_dtb(dt_bias), d_bc(bc), d_z(z), d_zb(z_bias), d_a(a),
      d_d(d), d_pool(pool);
  TypedOutput y(type, rows * E);
  SelectiveScanParams p;
  p.x = d_x.get();
  p.ld_x = E;
  p.dt = d_dt.get();
  p.ld_dt = E;
  p.dt_bias = d_dtb.get();
  p.b = d_bc.get() + 3;
  p.c = d_bc.get() + 3 + N;
  p.ld_bc = ld_bc;
  p.z = d_z.get() + E;
  p.ld_z = ld_z;
  p.z_bias = d_zb.get();
  p.a = d_a.get();
  p.d = d_d.get();
  p.ssm_state = d_pool.get() + E * N;  // layer 1
  p.slot_stride = slot_stride;
  p.chunks = chunks.table();
  if (lengths == ScanLengths::kLongUnknown) p.chunks.max_len = 0;
  p.y = y.get();
  p.ld_y = E;
  p.y_type = type;
  p.d_inner = E;
  p.d_state = static_cast<int>(N);
  p.rms_normalize_bc = normalize_bc;
  p.bc_eps = 1e-6f;
  ASSERT_EQ(decode ? InvokeSelectiveScanUpdate(p, nullptr) : InvokeSelectiveScanPrefill(p, nullptr),
            0);
  std::vector<float> bc_used = bc;
  if (normalize_bc) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t part = 0; part < 2; ++part) {
        float* v = bc_used.data() + r * ld_bc + 3 + part * N;
        float sum_squares = 0.0f;
        for (int64_t n = 0; n < N; ++n) sum_squares += v[n] * v[n];
        const float scale = math::RmsScale(sum_squares, static_cast<int>(N), 1e-6f);
        for (int64_t n = 0; n < N; ++n) v[n] *= scale;
      }
    }
  }

  std::vector<float> dt(rows * E), zb(rows * E), want(rows * E);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t e = 0; e < E; ++e) {
      dt[r * E + e] = math::DtSoftplus(dt_raw[r * E + e], dt_bias[e]);
      zb[r * E + e] = z[r * ld_z + E + e] + z_bias[e];
    }
  }
  std::vector<float> want_pool = pool;
  for (size_t i = 0; i < chunks.len.size(); ++i) {
    std::vector<float> scratch_state(E * N, 0.0f);
    float* state = chunks.slot[i] >= 0 ? want_pool.data() + chunks.slot[i] * slot_stride + E * N
                                       : scratch_state.data();
    if (chunks.fresh[i]) std::fill_n(state, E * N, 0.0f);
    const int64_t r0 = chunks.row_begin[i];
    cpu::SelectiveScan(x.data() + r0 * E, dt.data() + r0 * E, bc_used.data() + r0 * ld_bc + 3,
                       bc_used.data() + r0 * ld_bc + 3 + N, ld_bc, a.data(), d.data(),
                       zb.data() + r0 * E, E, chunks.len[i], E, N, state, want.data() + r0 * E, 0,
                       E);
  }
  ExpectNear(y.Download(), want, type, "scan y", 1e-5, 1e-5);
  ExpectNear(d_pool.Download(), want_pool, GemmType::kF32, "ssm state pool", 1e-5, 1e-5);
}

TEST_P(CudaOpsTest, SelectiveScanPrefillMatchesCpu) { RunScanTest(type(), false, 16); }
// Long chunks: the chunked parallel scan for each register row length (N 1, 5 and 16: tiles of
// 256 tokens, three for the longest chunk, the last partial; 32: five of 128).
TEST_P(CudaOpsTest, SelectiveScanChunkedPrefillMatchesCpu) {
  for (int64_t n : {16, 1, 5, 32}) {
    SCOPED_TRACE(n);
    RunScanTest(type(), false, n, 17, false, ScanLengths::kLong);
  }
  RunScanTest(type(), false, 16, 17, false, ScanLengths::kLongUnknown);
}
TEST_P(CudaOpsTest, SelectiveScanUpdateMatchesCpu) {
  for (int64_t padding : {17, 0}) {
    SCOPED_TRACE(padding == 0 ? "aligned state rows" : "unaligned state rows");
    RunScanTest(type(), true, 16, padding);
  }
}
// The decode kernel normalising B and C itself equals the CPU scan on B and C normalised first.
TEST_P(CudaOpsTest, SelectiveScanUpdateNormalisesBAndC) {
  RunScanTest(type(), true, 16, 0, /*normalize_bc=*/true);
  RunScanTest(type(), true, 5, 17, /*normalize_bc=*/true);
}
TEST_P(CudaOpsTest, SelectiveScanWithOtherStateSizes) {
  RunScanTest(type(), false, 5);
  for (int64_t n : {1, 5, 8, 20, 32}) {
    SCOPED_TRACE(n);
    RunScanTest(type(), true, n, n % 4 == 0 ? 0 : 17);
  }
}

// y[rows][m] (fp32) = x[rows][ldx] · w[m][k]ᵀ, w and x in `type`.
SkinnyGemmParams SkinnyParams(GemmType type, const void* w, const void* x, int64_t ldx, float* y,
                              int64_t rows, int64_t m, int64_t k) {
  SkinnyGemmParams p;
  p.type = type;
  p.w = w;
  p.x = x;
  p.ldx = ldx;
  p.y = y;
  p.ldy = m;
  p.rows = rows;
  p.m = m;
  p.k = k;
  return p;
}

// The float64 product of w [m][k] with `rows` activation rows, x_at(r, i) giving each value.
template <typename XAt>
std::vector<float> ReferenceProduct(const std::vector<float>& w, XAt x_at, int64_t rows, int64_t m,
                                    int64_t k) {
  std::vector<float> want(rows * m);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < m; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < k; ++i) acc += double(w[j * k + i]) * x_at(r, i);
      want[r * m + j] = static_cast<float>(acc);
    }
  }
  return want;
}

// Weights and activations in the test's type. k = 320 and 2600 take the 16-byte vector path, 37
// and 2601 the scalar one; the long ones also run the main loop's batches of k-steps (the short
// ones only its tail).
TEST_P(CudaOpsTest, SkinnyGemmMatchesDoubleReference) {
  const bool bf16 = type() == GemmType::kBF16;
  for (int64_t k : {320, 37, 2600, 2601}) {
    // m picks the k-split: 4 warps per column pair below 1024 columns, 2 below 4096, 1 above.
    for (int64_t m : {37, 1030, 4099}) {
      if (k > 1000 && m != 1030) continue;  // one long case per path keeps the emulator quick
      for (int64_t rows : {1, 2, 3, 5, 8}) {
        const int64_t ldx = k + 8;
        auto w = Random(m * k, 20), x = Random(rows * ldx, 21);
        if (bf16) {
          for (float& v : w) v = RoundBf16(v);
          for (float& v : x) v = RoundBf16(v);
        }
        DeviceBuffer<float> w32(w), x32(x), y(rows * m);
        DeviceBuffer<uint16_t> w16(ToBf16(w)), x16(ToBf16(x));
        const SkinnyGemmParams p = SkinnyParams(
            type(), bf16 ? static_cast<const void*>(w16.get()) : w32.get(),
            bf16 ? static_cast<const void*>(x16.get()) : x32.get(), ldx, y.get(), rows, m, k);
        ASSERT_TRUE(SkinnyGemmSupports(p));
        ASSERT_EQ(InvokeSkinnyGemm(p, nullptr), 0);
        const auto want = ReferenceProduct(
            w, [&](int64_t r, int64_t i) { return double(x[r * ldx + i]); }, rows, m, k);
        // Inputs are exact in their type and accumulation is fp32.
        ExpectNear(y.Download(), want, GemmType::kF32, "skinny gemm", 1e-5, 1e-4);
      }
    }
  }
  SkinnyGemmParams too_many;
  too_many.rows = 9;
  too_many.type = type();
  EXPECT_FALSE(SkinnyGemmSupports(too_many));
}

// Split-K across blocks (x_proj's shape: few columns, long k): equal to float64, the same bits on
// a second launch (the last block adds the slices in a fixed order), and every column pair's
// counter back at zero after each launch.
TEST_P(CudaOpsTest, SkinnyGemmSplitAcrossBlocksIsExactAndRepeatable) {
  const bool bf16 = type() == GemmType::kBF16;
  for (int k_blocks : {2, 4}) {
    for (int64_t k : {2600, 2601}) {
      for (int64_t m : {37, 290}) {
        for (int64_t rows : {1, 3, 8}) {
          auto w = Random(m * k, 50), x = Random(rows * k, 51);
          if (bf16) {
            for (float& v : w) v = RoundBf16(v);
            for (float& v : x) v = RoundBf16(v);
          }
          DeviceBuffer<float> w32(w), x32(x), y(rows * m), partials(k_blocks * rows * m);
          DeviceBuffer<uint16_t> w16(ToBf16(w)), x16(ToBf16(x));
          DeviceBuffer<unsigned> counters((m + 1) / 2);
          SkinnyGemmParams p = SkinnyParams(
              type(), bf16 ? static_cast<const void*>(w16.get()) : w32.get(),
              bf16 ? static_cast<const void*>(x16.get()) : x32.get(), k, y.get(), rows, m, k);
          p.k_blocks = k_blocks;
          p.partials = partials.get();
          p.counters = counters.get();
          ASSERT_TRUE(SkinnyGemmSupports(p));
          ASSERT_EQ(InvokeSkinnyGemm(p, nullptr), 0);
          const std::vector<float> first = y.Download();
          EXPECT_EQ(counters.Download(), std::vector<unsigned>((m + 1) / 2, 0u));
          ASSERT_EQ(InvokeSkinnyGemm(p, nullptr), 0);
          EXPECT_EQ(y.Download(), first) << "a second launch differs";
          EXPECT_EQ(counters.Download(), std::vector<unsigned>((m + 1) / 2, 0u));
          const auto want = ReferenceProduct(
              w, [&](int64_t r, int64_t i) { return double(x[r * k + i]); }, rows, m, k);
          ExpectNear(first, want, GemmType::kF32, "split-K skinny gemm", 1e-5, 1e-4);
        }
      }
    }
  }
  SkinnyGemmParams no_scratch;
  no_scratch.rows = 1;
  no_scratch.k_blocks = 4;
  EXPECT_FALSE(SkinnyGemmSupports(no_scratch));
}

// dt_proj without the norm kernel: fp32 X, each row RMS-normalised (or not) and rounded to the
// weight type in the kernel, equals a float64 product of the values the norm kernel would have
// written. ldx > k: the columns past k (B and C in x_dbl) must not enter the row's RMS.
TEST_P(CudaOpsTest, SkinnyGemmNormalisesAndRoundsFp32Activations) {
  const bool bf16 = type() == GemmType::kBF16;
  for (bool normalize : {true, false}) {
    for (int64_t k : {48, 37}) {
      for (int64_t m : {37, 1030}) {
        for (int64_t rows : {1, 3, 8}) {
          const int64_t ldx = k + 32 + (k % 8);  // a whole number of vectors when k is
          auto w = Random(m * k, 40), x = Random(rows * ldx, 41, 3.0f);
          if (bf16) {
            for (float& v : w) v = RoundBf16(v);
          }
          DeviceBuffer<float> w32(w), x32(x), y(rows * m);
          DeviceBuffer<uint16_t> w16(ToBf16(w));
          SkinnyGemmParams p =
              SkinnyParams(type(), bf16 ? static_cast<const void*>(w16.get()) : w32.get(),
                           x32.get(), ldx, y.get(), rows, m, k);
          p.x_f32 = true;
          p.rms_normalize_x = normalize;
          p.x_eps = 1e-6f;
          ASSERT_TRUE(SkinnyGemmSupports(p));
          ASSERT_EQ(InvokeSkinnyGemm(p, nullptr), 0);
          // What the norm kernel would have written: each row scaled by its RMS, then rounded.
          std::vector<float> x_used(rows * ldx);
          for (int64_t r = 0; r < rows; ++r) {
            float sum_squares = 0.0f;
            for (int64_t i = 0; i < k; ++i) sum_squares += x[r * ldx + i] * x[r * ldx + i];
            const float scale =
                normalize ? math::RmsScale(sum_squares, static_cast<int>(k), 1e-6f) : 1.0f;
            for (int64_t i = 0; i < k; ++i) {
              const float v = x[r * ldx + i] * scale;
              x_used[r * ldx + i] = bf16 ? RoundBf16(v) : v;
            }
          }
          const auto want = ReferenceProduct(
              w, [&](int64_t r, int64_t i) { return double(x_used[r * ldx + i]); }, rows, m, k);
          // A scale computed in another order can move a value across a bf16 rounding boundary.
          ExpectNear(y.Download(), want, GemmType::kF32, "skinny gemm, fp32 x", bf16 ? 1e-2 : 1e-5,
                     1e-4);
        }
      }
    }
  }
}

// in_proj with the decode conv fused into the skinny GEMM's output equals the skinny GEMM followed
// by the conv's own update kernel, exactly (the same fp32 values meet the same arithmetic): conv
// output, its GEMM copy, the state pool (a padding row and a fresh sequence included), and the z
// columns of y; the conv's columns of y are left alone.
TEST_P(CudaOpsTest, SkinnyGemmWithTheConvFusedEqualsGemmThenConv) {
  const bool bf16 = type() == GemmType::kBF16;
  const ConvSetup s{70, 4, 8};
  const Chunks chunks({1, 1, 1, 1}, {5, -1, 2, 0}, {0, 0, 1, 0});
  const int64_t rows = chunks.rows, E = s.E, K = s.K, m = 2 * E + 6, k = 96;
  auto w = Random(m * k, 30, 0.2f), x = Random(rows * k, 31);
  if (bf16) {
    for (float& v : w) v = RoundBf16(v);
    for (float& v : x) v = RoundBf16(v);
  }
  const auto weight = Random(E * K, 32, 0.5f), bias = Random(E, 33, 0.5f),
             x_bias = Random(E, 34, 0.1f), pool = Random(s.slots * s.slot_stride(), 35);
  const std::vector<float> sentinel(rows * m, 7.0f);
  DeviceBuffer<float> w32(w), x32(x), d_w(weight), d_b(bias), d_xb(x_bias);
  DeviceBuffer<uint16_t> w16(ToBf16(w)), x16(ToBf16(x));
  struct Run {
    Run(const std::vector<float>& y0, const std::vector<float>& pool0, size_t outputs, GemmType t)
        : y(y0), pool(pool0), out(outputs), out_gemm(t, outputs) {}
    DeviceBuffer<float> y, pool, out;
    TypedOutput out_gemm;
  };
  auto run = [&](bool fused) {
    auto r = std::make_unique<Run>(sentinel, pool, rows * E, type());
    CausalConv1dParams conv;
    conv.x = r->y.get();
    conv.ld_x = m;
    conv.x_bias = d_xb.get();
    conv.weight = d_w.get();
    conv.bias = d_b.get();
    conv.conv_state = r->pool.get() + s.per_layer();
    conv.slot_stride = s.slot_stride();
    conv.chunks = chunks.table();
    conv.out = r->out.get();
    conv.ld_out = E;
    conv.out_gemm = bf16 ? r->out_gemm.get() : nullptr;
    conv.ld_out_gemm = E;
    conv.out_gemm_type = type();
    conv.d_inner = E;
    conv.k_conv = static_cast<int>(K);
    SkinnyGemmParams p = SkinnyParams(
        type(), bf16 ? static_cast<const void*>(w16.get()) : w32.get(),
        bf16 ? static_cast<const void*>(x16.get()) : x32.get(), k, r->y.get(), rows, m, k);
    p.fuse_conv = fused;
    p.conv = conv;
    EXPECT_TRUE(SkinnyGemmSupports(p));
    EXPECT_EQ(InvokeSkinnyGemm(p, nullptr), 0);
    if (!fused) {
      EXPECT_EQ(InvokeCausalConv1dUpdate(conv, nullptr), 0);
    }
    return r;
  };
  const auto fused = run(true), separate = run(false);
  EXPECT_EQ(fused->out.Download(), separate->out.Download());
  if (bf16) {
    EXPECT_EQ(fused->out_gemm.Download(), separate->out_gemm.Download());
  }
  EXPECT_EQ(fused->pool.Download(), separate->pool.Download());
  EXPECT_NE(fused->pool.Download(), pool);  // the update did write the state
  const auto y_fused = fused->y.Download(), y_separate = separate->y.Download();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < m; ++c) {
      EXPECT_EQ(y_fused[r * m + c], c < E ? 7.0f : y_separate[r * m + c]) << r << "," << c;
    }
  }

  SkinnyGemmParams mismatched;
  mismatched.rows = 2;
  mismatched.m = m;
  mismatched.type = type();
  mismatched.fuse_conv = true;
  mismatched.conv.d_inner = E;
  mismatched.conv.k_conv = 4;
  mismatched.conv.out_gemm_type = type();
  mismatched.conv.chunks.num_chunks = 3;  // not one chunk per row
  EXPECT_FALSE(SkinnyGemmSupports(mismatched));
}

// Rows of random logits with planted ties, NaN, infinities and an all-NaN row, over a vocabulary
// that is not a multiple of the block and a padded leading dimension: the kernel's token is
// GreedyToken's (the host greedy rule) every time, and a row with a NaN or an infinity anywhere
// is reported as math::kNonFiniteRow.
TEST(CudaArgMaxTest, PicksTheHostGreedyTokenAndFlagsNonFiniteRows) {
  MS_SKIP_WITHOUT_CUDA();
  for (int64_t cols : {1, 37, 50280}) {
    const int64_t rows = 7, ld = cols + 3;
    std::vector<float> logits = Random(rows * ld, static_cast<uint32_t>(cols), 3.0f);
    auto at = [&](int64_t r, int64_t j) -> float& { return logits[r * ld + j]; };
    const float nan = std::nanf("");
    if (cols > 1) {
      at(1, cols - 1) = at(1, 0) = 100.0f;  // tie: the lower id wins
      at(2, 0) = nan;                       // NaN first: never preferred to a number
      at(3, cols / 2) = INFINITY;
      at(3, cols - 1) = INFINITY;
      for (int64_t j = 0; j < cols; ++j) at(4, j) = -INFINITY;
      at(4, cols - 1) = nan;  // -inf beats NaN
    }
    for (int64_t j = 0; j < cols; ++j) at(5, j) = nan;   // all NaN: the first id
    for (int64_t j = 0; j < cols; ++j) at(6, j) = 0.5f;  // all equal: the first id
    DeviceBuffer<float> d_logits(logits);
    DeviceBuffer<int32_t> d_out(rows);
    ArgMaxParams p;
    p.logits = d_logits.get();
    p.rows = rows;
    p.cols = cols;
    p.ld = ld;
    p.out = d_out.get();
    ASSERT_EQ(InvokeArgMax(p, nullptr), 0);
    const std::vector<int32_t> got = d_out.Download();
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t want = GreedyToken(std::span<const float>(logits.data() + r * ld, cols));
      EXPECT_EQ(got[r], want) << "cols " << cols << " row " << r;
    }
    if (cols > 1) {
      EXPECT_EQ(got[1], 0);
      EXPECT_EQ(got[2], math::kNonFiniteRow);  // a NaN
      EXPECT_EQ(got[3], math::kNonFiniteRow);  // +inf
      EXPECT_EQ(got[4], math::kNonFiniteRow);  // -inf and a NaN
      EXPECT_NE(got[0], math::kNonFiniteRow);
    }
    EXPECT_EQ(got[5], math::kNonFiniteRow);  // all NaN
    EXPECT_EQ(got[6], 0);                    // all equal: the first id
  }
  ArgMaxParams bad;
  bad.rows = 1;
  bad.cols = 10;
  bad.ld = 5;
  EXPECT_NE(InvokeArgMax(bad, nullptr), 0);
  cudaGetLastError();
}

INSTANTIATE_TEST_SUITE_P(Types, CudaOpsTest, ::testing::Values(GemmType::kF32, GemmType::kBF16),
                         [](const auto& info) {
                           return info.param == GemmType::kF32 ? "f32" : "bf16";
                         });

}  // namespace
}  // namespace mambaserve::kernels
