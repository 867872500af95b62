// The CPU engine against the ceilings of the machine it runs on, all measured in the same run:
// read and copy bandwidth, and the peak GEMM rate (a large square product with oneDNN in f32 and
// bf16, and with OpenBLAS in f32). Then, for a random 130m-shaped model held as f32 and as bf16:
// prefill tokens/s (512-token prompt) with oneDNN and with OpenBLAS, decode tokens/s at batch 1, 8
// and 32, batch-1 weight bandwidth, and each as a fraction of its ceiling. Writes JSON.
//
//   cpu_engine_bench [--preset 130m] [--dtypes f32,bf16] [--out bench/results/cpu_engine.json]
//                    [--threads N] (--help)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include "bench/bench_model.h"
#include "engine/backend/backend.h"
#include "engine/backend/cpu/blas_kernels.h"
#include "engine/backend/cpu/onednn_matmul.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/cpu/weight_panels.h"
#include "engine/backend_factory.h"
#include "engine/base/status_macros.h"
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

// OpenBLAS's f32 GEMM rate: a large square product (cblas_sgemm, its own threads), best of several
// runs, in GFLOP/s (2 M N K per product). Debian's OpenBLAS is built without its bfloat16 GEMM
// (cblas_sbgemm), so it has no bf16 figure.
double MeasureOpenBlasGemmGflops(int n, int threads) {
  openblas_set_num_threads(threads);
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
  openblas_set_num_threads(1);  // as the engine runs it
  return best;
}

// oneDNN's GEMM rate in `dtype` (f32 or bf16 inputs, f32 output): the same n x n x n product split
// by panels of rows over the engine's thread pool, exactly as the engine calls it (the weights in
// the engine's panels; every value equal, so their order does not matter). Best of several runs.
double MeasureOneDnnGemmGflops(ThreadPool& pool, int n, DType dtype) {
  const cpu::WeightPanels panels{n, n, dtype};
  const size_t elements = static_cast<size_t>(panels.elements());
  const size_t bytes = elements * DTypeSize(dtype);
  std::vector<unsigned char> a(bytes), b(bytes);
  for (size_t i = 0; i < elements; ++i) {
    if (dtype == DType::kBF16) {
      reinterpret_cast<uint16_t*>(a.data())[i] = F32ToBf16(0.5f);
      reinterpret_cast<uint16_t*>(b.data())[i] = F32ToBf16(0.25f);
    } else {
      reinterpret_cast<float*>(a.data())[i] = 0.5f;
      reinterpret_cast<float*>(b.data())[i] = 0.25f;
    }
  }
  std::vector<float> c(elements, 0.0f);
  std::atomic<bool> ok{true};
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = Clock::now();
    pool.ParallelFor(panels.panels(), [&](int64_t begin, int64_t end) {
      const int64_t row = begin * cpu::WeightPanels::kPanelRows;
      const int64_t rows = std::min<int64_t>(end * cpu::WeightPanels::kPanelRows, n) - row;
      const unsigned char* w = b.data() + begin * panels.panel_elements() * DTypeSize(dtype);
      if (!cpu::OneDnnMatMul(a.data(), n, w, rows, n, dtype, c.data() + row, n)) ok = false;
    });
    best = std::max(best, 2.0 * n * n * n / Seconds(t0, Clock::now()) / 1e9);
  }
  if (!ok || c[0] != 0.125f * static_cast<float>(n)) return 0;  // no kernel, or a wrong result
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

// Decode tokens/s with `batch` sequences each taking one token per step: the best of three runs of
// `steps` steps (as the ceilings and prefill are best-of too; this machine's neighbours come and
// go).
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
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) {
      if (!backend.Forward(step, &out).ok()) return 0;
      for (int i = 0; i < batch; ++i) next[i] = static_cast<int32_t>((next[i] * 31 + s) % vocab);
    }
    best = std::max(best, batch * steps / Seconds(t0, Clock::now()));
  }
  return best;
}

struct BenchFlags {
  std::string preset = "130m", out_path = "bench/results/cpu_engine.json", model_dir;
  int threads = 0, steps = 20, gemm_size = 1536;
  std::vector<int32_t> batches = {1, 8, 32};
  std::vector<std::string> dtypes = {"f32", "bf16"};

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--preset", preset, "the model shape")
        ->check(CLI::IsMember({"tiny", "130m", "370m"}));
    app.add_option("--dtypes", dtypes, "D1,D2: the weight dtypes to serve the model in")
        ->delimiter(',')
        ->check(CLI::IsMember({"f32", "bf16"}));
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

// The first "model name" of /proc/cpuinfo, and whether the CPU has the bf16 instructions.
nlohmann::json DescribeCpu() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return {{"model", model},
          {"avx512f", static_cast<bool>(__builtin_cpu_supports("avx512f"))},
          {"avx512_bf16", static_cast<bool>(__builtin_cpu_supports("avx512bf16"))},
          {"amx_bf16", static_cast<bool>(__builtin_cpu_supports("amx-bf16"))}};
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(std::shared_ptr<const Model> model,
                                                          DType dtype, int threads) {
  BackendOptions options;
  options.kind = BackendKind::kCpu;
  options.num_slots = 32;
  options.num_threads = threads;
  options.weight_dtype = dtype;
  return CreateBackend(std::move(model), options);
}

// Prefill of one 512-token prompt, best of 3, in tokens/s.
absl::StatusOr<double> PrefillTokensPerSecond(Backend& backend,
                                              const std::vector<int32_t>& prompt) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    Step step;
    step.sequences.push_back({0, prompt, true, true});
    StepOutput out;
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(backend.Forward(step, &out));
    best = std::max(best, prompt.size() / Seconds(t0, Clock::now()));
  }
  return best;
}

// Sets MAMBASERVE_CPU_ONEDNN for the backends created while it lives (the engine reads it when it
// loads the weights), and restores it after.
class GemmLibraryChoice {
 public:
  explicit GemmLibraryChoice(bool onednn) {
    if (const char* v = std::getenv(kName)) saved_ = v;
    setenv(kName, onednn ? "1" : "0", 1);
  }
  ~GemmLibraryChoice() {
    if (saved_) {
      setenv(kName, saved_->c_str(), 1);
    } else {
      unsetenv(kName);
    }
  }

 private:
  static constexpr const char* kName = "MAMBASERVE_CPU_ONEDNN";
  std::optional<std::string> saved_;
};

absl::Status Run(const BenchFlags& flags) {
  absl::StatusOr<BenchModel> bench_model = EnsureBenchModel(flags.preset, flags.model_dir);
  if (!bench_model.ok()) return bench_model.status();
  const ModelConfig& config = bench_model->config;
  absl::StatusOr<std::unique_ptr<Model>> loaded = LoadModel(bench_model->dir);
  if (!loaded.ok()) return loaded.status();
  const std::shared_ptr<const Model> model(std::move(*loaded));

  // The machine's ceilings.
  ThreadPool pool(flags.threads);
  const Bandwidth bw = MeasureBandwidth(pool, 512ull << 20);
  const double openblas_f32 = MeasureOpenBlasGemmGflops(flags.gemm_size, pool.num_threads());
  const double onednn_f32 = MeasureOneDnnGemmGflops(pool, flags.gemm_size, DType::kF32);
  const double onednn_bf16 = MeasureOneDnnGemmGflops(pool, flags.gemm_size, DType::kBF16);
  std::cerr << "read " << bw.read_gbs << " GB/s; GEMM peak GFLOP/s: OpenBLAS f32 " << openblas_f32
            << ", oneDNN f32 " << onednn_f32 << ", oneDNN bf16 " << onednn_bf16 << "\n";
  const double f32_peak = std::max(openblas_f32, onednn_f32);
  // bf16 weights can always be widened to f32, so their ceiling is at least the f32 one.
  const double bf16_peak = std::max(f32_peak, onednn_bf16);

  const auto prompt = RandomTokens(512, config.vocab_size, 7);
  nlohmann::json models = nlohmann::json::array();
  std::map<std::string, double> batch1_by_dtype;
  std::string threads_used, blas_core;
  for (const std::string& dtype_name : flags.dtypes) {
    const DType dtype = dtype_name == "bf16" ? DType::kBF16 : DType::kF32;
    const double gemm_peak = dtype == DType::kBF16 ? bf16_peak : f32_peak;
    // Prefill with each GEMM library, so the JSON says which wins here.
    nlohmann::json prefill = nlohmann::json::object();
    for (const bool onednn : {true, false}) {
      std::unique_ptr<Backend> backend;
      {
        GemmLibraryChoice choice(onednn);
        ASSIGN_OR_RETURN(backend, CreateCpuBackend(model, dtype, flags.threads));
      }
      ASSIGN_OR_RETURN(const double tps, PrefillTokensPerSecond(*backend, prompt));
      prefill[onednn ? "onednn" : "openblas"] = tps;
      std::cerr << dtype_name << " prefill (" << (onednn ? "oneDNN" : "OpenBLAS") << "): " << tps
                << " tok/s\n";
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                     CreateCpuBackend(model, dtype, flags.threads));  // the default choice
    const BackendInfo info = backend->info();
    threads_used = info.device;
    nlohmann::json decode = nlohmann::json::object();
    double batch1 = 0, batch32 = 0;
    for (int batch : flags.batches) {
      const double tps = DecodeTokensPerSecond(*backend, batch, flags.steps);
      decode[std::to_string(batch)] = tps;
      if (batch == 1) batch1 = tps;
      if (batch == 32) batch32 = tps;
      std::cerr << dtype_name << " decode batch " << batch << ": " << tps << " tok/s\n";
    }
    batch1_by_dtype[dtype_name] = batch1;
    const double best_prefill =
        std::max(prefill["onednn"].get<double>(), prefill["openblas"].get<double>());
    const double prefill_gflops = best_prefill * PrefillFlopsPerToken(config) / 1e9;
    // Batch-1 decode streams every weight once per token (the tied lm_head is the embedding).
    const double achieved_gbs = info.weight_bytes * batch1 / 1e9;
    models.push_back({
        {"dtype", DTypeName(info.weight_dtype)},
        {"weight_bytes", info.weight_bytes},
        {"prefill_512_tokens_per_s", prefill},
        {"prefill_gflops", prefill_gflops},
        {"prefill_fraction_of_gemm_peak", prefill_gflops / gemm_peak},
        {"decode_tokens_per_s", decode},
        {"batch1_achieved_weight_gbs", achieved_gbs},
        {"batch1_fraction_of_read_bandwidth", achieved_gbs / bw.read_gbs},
        {"batch32_over_batch1", batch1 > 0 ? batch32 / batch1 : 0.0},
        // Batch 32 as a fraction of what the GEMM peak allows for these projections.
        {"batch32_fraction_of_gemm_peak", batch32 * PrefillFlopsPerToken(config) / 1e9 / gemm_peak},
    });
  }

  nlohmann::json result = {
      {"benchmark", "cpu_engine"},
      {"model",
       {{"preset", flags.preset},
        {"d_model", config.d_model},
        {"n_layers", config.n_layers},
        {"vocab", config.vocab_size}}},
      {"cpu", DescribeCpu()},
      {"threads", threads_used},
      {"blas_kernels", BlasCoreName()},
      {"measured_copy_gbs", bw.copy_gbs},
      {"measured_read_gbs", bw.read_gbs},
      {"measured_gemm_peak_gflops",
       {{"openblas_f32", openblas_f32}, {"onednn_f32", onednn_f32}, {"onednn_bf16", onednn_bf16}}},
      {"dtypes", models},
      {"targets",
       {{"batch1_fraction_of_read_bandwidth", 0.85},
        {"prefill_fraction_of_gemm_peak", 0.5},
        {"bf16_over_f32_batch1", 2.0},
        {"batch32_over_batch1", 10.0}}},
  };
  if (batch1_by_dtype.count("f32") && batch1_by_dtype.count("bf16") && batch1_by_dtype["f32"] > 0) {
    result["bf16_over_f32_batch1"] = batch1_by_dtype["bf16"] / batch1_by_dtype["f32"];
  }
  std::filesystem::create_directories(std::filesystem::path(flags.out_path).parent_path());
  if (auto s = WriteOutputFile(flags.out_path, result.dump(2) + "\n"); !s.ok()) return s;
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
