// flat_over_length_bench: the SSM claim measured. Streams generate a long run of tokens through the
// Engine (scheduler, batching and the CPU backend a server uses) while the process's resident
// memory and the time per token are sampled every --sample-every tokens of the first stream. A
// transformer's KV cache would grow with every token; here memory and per-token time should stay
// flat. Writes the samples and the first-vs-last-tenth ratios (bench/flat_over_length.h) as JSON.
//
//   flat_over_length_bench [--preset 130m] [--tokens 100000] [--streams 1] [--sample-every 1000]
//                          [--out bench/results/flat_over_length.json]
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include "bench/bench_model.h"
#include "bench/flat_over_length.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"

namespace mambaserve {
namespace {

struct BenchFlags {
  std::string preset = "130m", out_path = "bench/results/flat_over_length.json", model_dir;
  int64_t tokens = 100000, sample_every = 1000;
  int streams = 1, threads = 0;

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--preset", preset, "the model shape")
        ->check(CLI::IsMember({"tiny", "130m", "370m"}));
    app.add_option("--tokens", tokens, "tokens each stream generates")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 31));
    app.add_option("--streams", streams, "concurrent streams")->check(CLI::Range(1, 1024));
    app.add_option("--sample-every", sample_every, "tokens of the first stream between samples")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 31));
    app.add_option("--threads", threads, "0: all cores")->check(CLI::Range(0, 4096));
    app.add_option("--model-dir", model_dir, "DIR: the random model (default: under /tmp)");
    app.add_option("--out", out_path, "FILE: the JSON result");
  }
};

absl::Status Run(const BenchFlags& f) {
  absl::StatusOr<BenchModel> bench_model = EnsureBenchModel(f.preset, f.model_dir);
  if (!bench_model.ok()) return bench_model.status();
  const std::string& dir = bench_model->dir;
  const ModelConfig* config = &bench_model->config;
  EngineOptions options;
  options.model_dir = dir;
  options.backend.kind = BackendKind::kCpu;
  options.backend.num_threads = f.threads;
  options.backend.num_slots = f.streams;
  options.scheduler.max_batch = f.streams;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  if (!engine.ok()) return engine.status();

  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < f.streams; ++i) {
    GenerationRequest request;
    request.prompt = {static_cast<int32_t>(1 + i), 2, 3, 4};
    request.sampling.max_tokens = static_cast<int32_t>(f.tokens);
    request.sampling.temperature = 0.8;  // sampled: greedy random weights loop on a few tokens
    request.sampling.seed = static_cast<uint64_t>(i);
    request.sampling.ignore_eos = true;
    request.stream = std::make_shared<GenerationStream>(1 << 16);
    streams.push_back(request.stream);
    if (absl::Status s = (*engine)->Submit(std::move(request)); !s.ok()) return s;
  }
  WindowSampler sampler(f.sample_every, "self");
  std::vector<int64_t> produced(streams.size(), 0);
  std::vector<bool> done(streams.size(), false);
  size_t finished = 0;
  while (finished < streams.size()) {
    bool any = false;
    for (size_t i = 0; i < streams.size(); ++i) {
      while (std::optional<GenerationEvent> e = streams[i]->Pop()) {
        any = true;
        produced[i] += static_cast<int64_t>(e->token_ids.size());
        if (e->final) {
          if (!e->status.ok()) return e->status;
          done[i] = true;
          ++finished;
        }
      }
    }
    const size_t before = sampler.samples().size();
    sampler.Observe(produced[0]);
    if (sampler.samples().size() > before) {
      std::cerr << "\r" << sampler.samples().back()["tokens"] << "/" << f.tokens << " tokens"
                << std::flush;
    }
    if (!any) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::cerr << "\n";
  nlohmann::json out = {{"benchmark", "flat_over_length"},
                        {"preset", f.preset},
                        {"streams", f.streams},
                        {"tokens_per_stream", f.tokens},
                        {"sample_every", f.sample_every},
                        {"state_bytes_per_stream", config->state_bytes()},
                        {"samples", sampler.samples()}};
  AddFlatOverLengthSummary(out);
  std::cout << out.dump(1) << "\n";
  return WriteOutputFile(f.out_path, out.dump(1) + "\n");
}

}  // namespace
}  // namespace mambaserve

int main(int argc, char** argv) {
  mambaserve::BenchFlags flags;
  CLI::App app{"Resident memory and time per token over a long generation."};
  flags.Declare(app);
  if (std::optional<int> exit = mambaserve::ParseFlags(app, argc, argv)) return *exit;
  if (absl::Status s = mambaserve::Run(flags); !s.ok()) {
    std::cerr << "flat_over_length_bench: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
