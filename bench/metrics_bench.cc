// The cost of recording metrics where it matters: what the scheduler thread pays per step
// (ServingMetrics::StepCompleted, three histogram observations), what a response writer pays per
// token (NextTokens) and per call (GrpcCallCompleted, a labelled lookup), each alone and with other
// threads recording at the same time, and what one scrape costs. Writes JSON; compare the step cost
// with a scheduler step (bench/results/cpu_engine.json: ~30 ms at batch 1 on the 130m shape).
//
//   metrics_bench [--out bench/results/metrics_observation.json] [--iterations N]
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/cli/flags.h"
#include "server/metrics/collection.h"
#include "server/metrics/serving_metrics.h"

namespace mambaserve::metrics {
namespace {

using Clock = std::chrono::steady_clock;

// Nanoseconds per call of `op`, best of five runs (the machines are noisy; the best run is the
// cost without interference from other tenants).
template <typename Op>
double NanosPerCall(int64_t iterations, Op op) {
  double best = 1e30;
  for (int run = 0; run < 5; ++run) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < iterations; ++i) op(i);
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
    best = std::min(best, ns / static_cast<double>(iterations));
  }
  return best;
}

// The same while `others` threads record tokens and gRPC calls as response writers do.
template <typename Op>
double NanosPerCallUnderLoad(ServingMetrics& metrics, int others, int64_t iterations, Op op) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < others; ++t) {
    writers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        metrics.NextTokens(1, 0.02);
        metrics.GrpcCallCompleted("Generate", 0);
      }
    });
  }
  const double ns = NanosPerCall(iterations, op);
  stop = true;
  for (auto& w : writers) w.join();
  return ns;
}

int Main(int argc, char** argv) {
  std::string out_path = "bench/results/metrics_observation.json";
  int64_t iterations = 2000000;
  CLI::App app{"What recording metrics costs the scheduler and the response writers.",
               "metrics_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--out", out_path, "FILE: the JSON result");
  app.add_option("--iterations", iterations, "calls per measurement")
      ->check(CLI::Range(int64_t{1000}, int64_t{1} << 40));
  if (std::optional<int> exit = mambaserve::ParseFlags(app, argc, argv)) return *exit;

  auto collection = std::make_shared<Collection>();
  ServingMetricsOptions options;
  options.model_name = "bench";
  auto created = ServingMetrics::Create(collection.get(), options);
  if (!created.ok()) {
    std::cerr << created.status() << "\n";
    return 1;
  }
  ServingMetrics& metrics = **created;

  nlohmann::json result;
  result["benchmark"] = "metrics_observation";
  result["library"] = "prometheus-cpp";
  result["iterations"] = iterations;
  result["hardware_threads"] = std::thread::hardware_concurrency();
  auto step = [&](int64_t i) { metrics.StepCompleted(8 + (i & 7), 8, 0.003); };
  result["step_completed_ns"] = NanosPerCall(iterations, step);
  result["next_tokens_ns"] =
      NanosPerCall(iterations, [&](int64_t) { metrics.NextTokens(1, 0.02); });
  result["next_tokens_4_at_once_ns"] =
      NanosPerCall(iterations, [&](int64_t) { metrics.NextTokens(4, 0.08); });
  result["grpc_call_completed_ns"] =
      NanosPerCall(iterations, [&](int64_t) { metrics.GrpcCallCompleted("Generate", 0); });
  result["step_completed_with_2_writers_ns"] = NanosPerCallUnderLoad(metrics, 2, iterations, step);
  const int64_t scrapes = 200;
  result["scrape_us"] =
      NanosPerCall(scrapes, [&](int64_t) { static_cast<void>(collection->Serialize()); }) / 1000.0;
  result["exposition_bytes"] = collection->Serialize().size();

  std::filesystem::create_directories(std::filesystem::path(out_path).parent_path());
  std::ofstream(out_path) << result.dump(2) << "\n";
  std::cout << result.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace mambaserve::metrics

int main(int argc, char** argv) { return mambaserve::metrics::Main(argc, argv); }
