// CPU engine throughput on a 130m-shaped f32 model: prefill tokens/s (512-token prompt), decode
// tokens/s at batch 1, 8 and 32, and batch-1 achieved weight bandwidth next to the machine's
// measured memory bandwidth (copy and read loops in the same run). Writes JSON.
//
//   cpu_engine_bench [--preset 130m] [--out bench/results/cpu_engine.json] [--threads N] (--help)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <optional>
#include <random>

#include "bench/bench_model.h"
#include "engine/backend/backend.h"
#include "engine/backend/cpu/blas_kernels.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend_factory.h"
#include "nlohmann/json.hpp"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"

namespace mambaserve {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// STREAM-style copy (bytes read + written per second) and a read-only sum over `bytes`, both
// split over the same threads the engine uses. Best of several runs.
struct Bandwidth {
  double copy_gbs = 0;
  double read_gbs = 0;
};

Bandwidth MeasureBandwidth(ThreadPool& pool, size_t bytes) {
  const size_t n = bytes / sizeof(float);
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  Bandwidth best;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    pool.ParallelFor(
        static_cast<int64_t>(n),
        [&](int64_t b, int64_t e) {
          std::memcpy(dst.data() + b, src.data() + b, (e - b) * sizeof(float));
        },
        1024);
    auto t1 = Clock::now();
    best.copy_gbs = std::max(best.copy_gbs, 2.0 * bytes / Seconds(t0, t1) / 1e9);
    std::vector<double> partial(pool.num_threads(), 0.0);
    std::atomic<int> slot{0};
    t0 = Clock::now();
    pool.ParallelFor(
        static_cast<int64_t>(n),
        [&](int64_t b, int64_t e) {
          float acc = 0.0f;
          const float* p = src.data();
#pragma omp simd reduction(+ : acc)
          for (int64_t i = b; i < e; ++i) acc += p[i];
          partial[slot++] = acc;
        },
        1024);
    t1 = Clock::now();
    if (std::accumulate(partial.begin(), partial.end(), 0.0) < 0) std::cerr << "";  // keep the loop
    best.read_gbs = std::max(best.read_gbs, bytes / Seconds(t0, t1) / 1e9);
  }
  return best;
}

// The machine's f32 GEMM ceiling: a large square product through OpenBLAS (cblas_sgemm), best of
// several runs, in GFLOP/s (2 M N K per product). Debian's OpenBLAS is built without its bfloat16
// GEMM (cblas_sbgemm), so no bf16 ceiling is measured here.
double MeasureF32GemmPeakGflops(int n) {
  const size_t elements = static_cast<size_t>(n) * n;
  std::vector<float> a(elements, 0.5f), b(elements, 0.25f), c(elements, 0.0f);
  const double flops = 2.0 * n * n * n;
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    best = std::max(best, flops / Seconds(t0, Clock::now()) / 1e9);
  }
  if (c[0] != 0.125f * static_cast<float>(n)) std::cerr << "sgemm result off: " << c[0] << "\n";
  return best;
}

// Multiply-adds per prompt token in prefill: the projections of every layer (the lm_head runs for
// the last token only), so 2 x that is the FLOPs a GEMM-bound prefill performs per token.
double PrefillFlopsPerToken(const ModelConfig& c) {
  const double d = c.d_model, e = c.d_inner, r = c.dt_rank, n = c.d_state;
  return 2.0 * c.n_layers * (d * 2 * e + e * (r + 2 * n) + r * e + e * d);
}

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Decode tokens/s with `batch` sequences each taking one token per step.
double DecodeTokensPerSecond(Backend& backend, int batch, int steps) {
  const int64_t vocab = backend.config().vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  Step prefill;
  for (int i = 0; i < batch; ++i) prompts.push_back(RandomTokens(8, vocab, 100 + i));
  for (int i = 0; i < batch; ++i) prefill.sequences.push_back({i, prompts[i], true, false});
  StepOutput out;
  if (!backend.Forward(prefill, &out).ok()) return 0;
  std::vector<int32_t> next(batch, 1);
  Step step;
  for (int i = 0; i < batch; ++i)
    step.sequences.push_back({i, std::span(&next[i], 1), false, true});
  backend.Forward(step, &out).IgnoreError();  // warm-up
  const auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) {
    if (!backend.Forward(step, &out).ok()) return 0;
    for (int i = 0; i < batch; ++i) next[i] = static_cast<int32_t>((next[i] * 31 + s) % vocab);
  }
  return batch * steps / Seconds(t0, Clock::now());
}

struct BenchFlags {
  std::string preset = "130m", out_path = "bench/results/cpu_engine.json", model_dir;
  int threads = 0, steps = 20, gemm_size = 1536;
  std::vector<int32_t> batches = {1, 8, 32};

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--preset", preset, "the model shape")
        ->check(CLI::IsMember({"tiny", "130m", "370m"}));
    app.add_option("--out", out_path, "FILE: the JSON result");
    app.add_option("--threads", threads, "0: all cores")->check(CLI::Range(0, 4096));
    app.add_option("--model-dir", model_dir,
                   "DIR: the random model, written once (default: a folder under /tmp)");
    app.add_option("--steps", steps, "decode steps per batch size")->check(CLI::Range(1, 1 << 20));
    app.add_option("--gemm-size", gemm_size, "N: the square GEMM that measures the peak rate")
        ->check(CLI::Range(64, 16384));
    app.add_option("--decode-batches", batches, "B1,B2,...: decode batch sizes")
        ->delimiter(',')
        ->check(CLI::Range(1, 4096));
  }
};

absl::Status Run(const BenchFlags& flags) {
  const std::string& preset = flags.preset;
  const std::string& out_path = flags.out_path;
  const int threads = flags.threads;
  const int steps = flags.steps;
  absl::StatusOr<BenchModel> bench_model = EnsureBenchModel(preset, flags.model_dir);
  if (!bench_model.ok()) return bench_model.status();
  const ModelConfig* config = &bench_model->config;
  auto model = LoadModel(bench_model->dir);
  if (!model.ok()) return model.status();
  BackendOptions options;
  options.kind = BackendKind::kCpu;
  options.num_slots = 32;
  options.num_threads = threads;
  auto backend_or = CreateBackend(std::shared_ptr<const Model>(std::move(*model)), options);
  if (!backend_or.ok()) return backend_or.status();
  Backend& backend = **backend_or;
  const BackendInfo info = backend.info();

  ThreadPool pool(threads);
  const Bandwidth bw = MeasureBandwidth(pool, 512ull << 20);
  const double gemm_f32_gflops = MeasureF32GemmPeakGflops(flags.gemm_size);
  std::cerr << "f32 GEMM peak: " << gemm_f32_gflops << " GFLOP/s\n";

  // Prefill: one 512-token prompt, best of 3.
  const auto prompt = RandomTokens(512, config->vocab_size, 7);
  double prefill_tps = 0;
  for (int rep = 0; rep < 3; ++rep) {
    Step step;
    step.sequences.push_back({0, prompt, true, true});
    StepOutput out;
    const auto t0 = Clock::now();
    if (auto s = backend.Forward(step, &out); !s.ok()) return s;
    prefill_tps = std::max(prefill_tps, prompt.size() / Seconds(t0, Clock::now()));
  }

  nlohmann::json decode = nlohmann::json::object();
  double batch1 = 0, batch32 = 0;
  for (int batch : flags.batches) {
    const double tps = DecodeTokensPerSecond(backend, batch, steps);
    decode[std::to_string(batch)] = tps;
    if (batch == 1) batch1 = tps;
    if (batch == 32) batch32 = tps;
    std::cerr << "decode batch " << batch << ": " << tps << " tok/s\n";
  }
  // Batch-1 decode streams every weight once per token (the tied lm_head is the embedding).
  const double achieved_gbs = info.weight_bytes * batch1 / 1e9;
  const double prefill_gflops = prefill_tps * PrefillFlopsPerToken(*config) / 1e9;

  nlohmann::json result = {
      {"benchmark", "cpu_engine"},
      {"model",
       {{"preset", preset},
        {"dtype", DTypeName(info.weight_dtype)},
        {"weight_bytes_mapped_in_place", info.weight_bytes_mapped},
        {"weight_bytes", info.weight_bytes},
        {"d_model", config->d_model},
        {"n_layers", config->n_layers},
        {"vocab", config->vocab_size}}},
      {"threads", info.device},
      {"blas_kernels", BlasCoreName()},
      {"prefill_512_tokens_per_s", prefill_tps},
      {"decode_tokens_per_s", decode},
      {"batch1_achieved_weight_gbs", achieved_gbs},
      {"measured_copy_gbs", bw.copy_gbs},
      {"measured_read_gbs", bw.read_gbs},
      {"batch1_fraction_of_copy_bandwidth", achieved_gbs / bw.copy_gbs},
      {"batch1_fraction_of_read_bandwidth", achieved_gbs / bw.read_gbs},
      {"batch32_over_batch1", batch32 / batch1},
      {"measured_f32_gemm_peak_gflops", gemm_f32_gflops},
      {"prefill_gflops", prefill_gflops},
      // The f32 ceiling, also for bf16 weights (whose products run in f32 today).
      {"prefill_fraction_of_f32_gemm_peak", prefill_gflops / gemm_f32_gflops},
      {"targets",
       {{"batch1_fraction_of_read_bandwidth", 0.85},
        {"prefill_fraction_of_gemm_peak", 0.5},
        {"batch32_over_batch1", 10.0}}},
  };
  std::filesystem::create_directories(std::filesystem::path(out_path).parent_path());
  if (auto s = WriteOutputFile(out_path, result.dump(2) + "\n"); !s.ok()) return s;
  std::cout << result.dump(2) << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace mambaserve

int main(int argc, char** argv) {
  mambaserve::ReexecWithFastBlasKernelsIfNeeded(argv);
  mambaserve::BenchFlags flags;
  CLI::App app{"CPU engine throughput on a random model; writes JSON.", "cpu_engine_bench"};
  flags.Declare(app);
  if (std::optional<int> exit = mambaserve::ParseFlags(app, argc, argv)) return *exit;
  absl::Status s = mambaserve::Run(flags);
  if (!s.ok()) {
    std::cerr << "cpu_engine_bench: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
