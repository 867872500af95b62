// prefix_cache_bench: time to first token for requests sharing a long system prompt, with the
// prefix-state cache off and on, through the Engine (the scheduler, batching and the CPU backend a
// server uses). Each user turn is a fresh request without a session: the system prompt plus a short
// question. Off and on run interleaved in one process, so the ratio is measured under one load.
//
//   prefix_cache_bench [--preset 130m] [--system-tokens 2000] [--users 8] [--rounds 3]
//                      [--out bench/results/prefix_cache.json]
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "bench/bench_model.h"
#include "bench/bench_stats.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"

namespace mambaserve {
namespace {

struct BenchFlags {
  std::string preset = "130m", out_path = "bench/results/prefix_cache.json", model_dir;
  int system_tokens = 2000, question_tokens = 24, users = 8, rounds = 3, threads = 0;

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--preset", preset, "the model shape")
        ->check(CLI::IsMember({"tiny", "130m", "370m"}));
    app.add_option("--system-tokens", system_tokens, "the shared prompt's length")
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--question-tokens", question_tokens, "each user's own tokens")
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--users", users, "requests per round, one after another")
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--rounds", rounds, "rounds of (cache off, cache on)")
        ->check(CLI::Range(1, 100));
    app.add_option("--threads", threads, "0: all cores")->check(CLI::Range(0, 4096));
    app.add_option("--model-dir", model_dir, "DIR: the random model (default: under /tmp)");
    app.add_option("--out", out_path, "FILE: the JSON result");
  }
};

// Seconds from Submit to the first token of a one-token greedy request.
absl::StatusOr<double> TimeToFirstToken(Engine& engine, std::vector<int32_t> prompt) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.sampling.max_tokens = 1;
  request.sampling.temperature = 0;
  request.stream = std::make_shared<GenerationStream>();
  auto stream = request.stream;
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = engine.Submit(std::move(request)); !s.ok()) return s;
  for (;;) {
    if (std::optional<GenerationEvent> e = stream->Pop()) {
      if (!e->status.ok()) return e->status;
      if (e->final) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      continue;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

absl::Status Run(const BenchFlags& f) {
  absl::StatusOr<BenchModel> bench_model = EnsureBenchModel(f.preset, f.model_dir);
  if (!bench_model.ok()) return bench_model.status();
  const std::string& dir = bench_model->dir;
  const ModelConfig* config = &bench_model->config;
  std::vector<int32_t> system(static_cast<size_t>(f.system_tokens));
  for (size_t i = 0; i < system.size(); ++i)
    system[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(config->vocab_size));

  nlohmann::json modes = nlohmann::json::object();
  std::map<std::string, std::vector<double>> ttft;
  for (int round = 0; round < f.rounds; ++round) {
    for (const bool cached : {false, true}) {
      EngineOptions options;
      options.model_dir = dir;
      options.backend.kind = BackendKind::kCpu;
      options.backend.num_threads = f.threads;
      options.backend.num_slots = 4;
      options.max_prompt_tokens = f.system_tokens + f.question_tokens;
      options.scheduler.prefix_cache_bytes = cached ? int64_t{1} << 30 : 0;
      absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
      if (!engine.ok()) return engine.status();
      for (int user = 0; user < f.users; ++user) {
        std::vector<int32_t> prompt = system;
        for (int i = 0; i < f.question_tokens; ++i)
          prompt.push_back(static_cast<int32_t>((user * 131 + i * 17 + 5) % config->vocab_size));
        absl::StatusOr<double> seconds = TimeToFirstToken(**engine, std::move(prompt));
        if (!seconds.ok()) return seconds.status();
        // The first user of an engine with the cache fills it: reported apart.
        const std::string key = !cached ? "off" : (user == 0 ? "on_first_user" : "on");
        ttft[key].push_back(*seconds);
      }
      if (cached) {
        const SchedulerStats s = (*engine)->stats().Snapshot();
        modes["cache_stats"] = {{"hits", s.prefix_cache_hits},
                                {"misses", s.prefix_cache_misses},
                                {"saved_prompt_tokens", s.prefix_cache_saved_tokens},
                                {"bytes", s.prefix_cache_bytes},
                                {"entries", s.prefix_cache_entries}};
      }
    }
  }
  for (const auto& [key, v] : ttft) {
    modes[key] = {{"requests", v.size()},
                  {"ttft_p50_s", Percentile(v, 0.5)},
                  {"ttft_p90_s", Percentile(v, 0.9)},
                  {"ttft_mean_s", std::accumulate(v.begin(), v.end(), 0.0) / v.size()}};
  }
  const double speedup =
      modes["off"]["ttft_p50_s"].get<double>() / modes["on"]["ttft_p50_s"].get<double>();
  nlohmann::json out = {{"benchmark", "prefix_cache"},
                        {"preset", f.preset},
                        {"system_tokens", f.system_tokens},
                        {"question_tokens", f.question_tokens},
                        {"block_tokens", SchedulerOptions{}.prefix_cache_block_tokens},
                        {"users_per_round", f.users},
                        {"rounds", f.rounds},
                        {"ttft", modes},
                        {"ttft_p50_speedup", speedup}};
  std::cout << out.dump(2) << "\n";
  return WriteOutputFile(f.out_path, out.dump(2) + "\n");
}

}  // namespace
}  // namespace mambaserve

int main(int argc, char** argv) {
  mambaserve::BenchFlags flags;
  CLI::App app{"Time to first token with a shared system prompt, prefix cache off and on."};
  flags.Declare(app);
  if (std::optional<int> exit = mambaserve::ParseFlags(app, argc, argv)) return *exit;
  if (absl::Status s = mambaserve::Run(flags); !s.ok()) {
    std::cerr << "prefix_cache_bench: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
