// session_store_bench: what the Redis session store adds to a turn, and what storing a state of a
// given size costs.
//  - Turns: one conversation per mode (no store, write-behind, sync), through the Engine on a
//    random checkpoint of the preset's shape; the modes take turns in every round, so they share
//    the machine's load. A turn's latency runs from Submit to its final event, which is what a
//    client waits for.
//  - Raw: lease-fenced writes and reads of blobs the size of the preset's state and of
//    Falcon-Mamba-7B's (64 layers x 8192 x (3 + 16) floats: 38 MiB).
// It starts its own redis-server (Debian's) on 127.0.0.1 unless --redis names one.
//
//   session_store_bench [--preset 130m] [--rounds 20] [--redis redis://HOST:PORT]
//                       [--out bench/results/session_store.json]
#include <algorithm>
#include <chrono>
#include <future>
#include <iostream>

#include "bench/bench_model.h"
#include "bench/bench_stats.h"
#include "engine/engine.h"
#include "engine/session_store/redis_url.h"
#include "nlohmann/json.hpp"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"
#include "tests/testing/redis_process.h"

namespace mambaserve {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchFlags {
  std::string preset = "130m", out_path = "bench/results/session_store.json", model_dir, redis;
  int rounds = 20, prompt_tokens = 16, generate = 8, raw_iterations = 10, threads = 0;

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--preset", preset, "the model shape")
        ->check(CLI::IsMember({"tiny", "130m", "370m"}));
    app.add_option("--rounds", rounds, "turns per mode")->check(CLI::Range(1, 10000));
    app.add_option("--prompt-tokens", prompt_tokens, "each turn's prompt")
        ->check(CLI::Range(1, 1 << 16));
    app.add_option("--generate", generate, "tokens each turn generates")
        ->check(CLI::Range(1, 1 << 16));
    app.add_option("--raw-iterations", raw_iterations, "writes and reads per blob size")
        ->check(CLI::Range(1, 10000));
    app.add_option("--threads", threads, "0: all cores")->check(CLI::Range(0, 4096));
    app.add_option("--model-dir", model_dir, "DIR: the random model (default: under /tmp)");
    app.add_option("--redis", redis, "redis://HOST:PORT to use instead of starting one");
    app.add_option("--out", out_path, "FILE: the JSON result");
  }
};

nlohmann::json Summary(const std::vector<double>& ms) {
  return {{"p50_ms", Percentile(ms, 0.5)},
          {"p90_ms", Percentile(ms, 0.9)},
          {"min_ms", *std::min_element(ms.begin(), ms.end())},
          {"samples", ms.size()}};
}

// Milliseconds from Submit to the final event of one greedy turn.
absl::StatusOr<double> TurnMs(Engine& engine, const std::string& session,
                              std::vector<int32_t> prompt, int generate) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.sampling.max_tokens = generate;
  request.sampling.temperature = 0;
  request.sampling.ignore_eos = true;
  request.session_id = session;
  request.stream = std::make_shared<GenerationStream>(1 << 12);
  auto stream = request.stream;
  const auto start = Clock::now();
  if (absl::Status s = engine.Submit(std::move(request)); !s.ok()) return s;
  for (;;) {
    if (std::optional<GenerationEvent> e = stream->Pop()) {
      if (!e->final) continue;
      if (!e->status.ok()) return e->status;
      return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

absl::StatusOr<nlohmann::json> RawStore(const RedisEndpoint& endpoint, int64_t bytes,
                                        int iterations) {
  RedisSessionStoreOptions options;
  options.endpoint = endpoint;
  options.timeout = std::chrono::milliseconds(30000);
  options.key_prefix = "mambaserve-bench:";
  RedisSessionStore store(options);
  const std::string id = "raw-" + std::to_string(bytes);
  std::vector<double> write_ms, read_ms;
  std::string blob(static_cast<size_t>(bytes), '\x5a');
  if (absl::Status s = store.AcquireLease(id, "bench", std::chrono::minutes(5)); !s.ok()) return s;
  for (int i = 0; i < iterations; ++i) {
    blob[static_cast<size_t>(i) % blob.size()] ^= 1;  // a new version each time
    StoredSession session;
    session.header = {i + 1, 0, "bench"};
    session.blob = blob;
    auto start = Clock::now();
    if (absl::Status s = store.Write(id, "bench", session, std::chrono::minutes(5)); !s.ok()) {
      return s;
    }
    write_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    start = Clock::now();
    absl::StatusOr<std::optional<StoredSession>> read = store.Read(id);
    if (!read.ok()) return read.status();
    read_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  store.Delete(id, "bench", std::chrono::milliseconds(1)).IgnoreError();
  store.ReleaseLease(id, "bench").IgnoreError();
  const double mib = static_cast<double>(bytes) / (1 << 20);
  nlohmann::json out = {
      {"blob_bytes", bytes}, {"write", Summary(write_ms)}, {"read", Summary(read_ms)}};
  out["write"]["mib_per_s_at_p50"] = mib / (Percentile(write_ms, 0.5) / 1000);
  return out;
}

absl::Status Run(const BenchFlags& f) {
  absl::StatusOr<BenchModel> model = EnsureBenchModel(f.preset, f.model_dir);
  if (!model.ok()) return model.status();
  std::unique_ptr<testing::RedisProcess> own_redis;
  RedisEndpoint endpoint;
  if (f.redis.empty()) {
    own_redis = std::make_unique<testing::RedisProcess>();
    if (!own_redis->ready()) return absl::UnavailableError("could not start redis-server");
    endpoint = own_redis->endpoint();
  } else {
    absl::StatusOr<RedisEndpoint> parsed = ParseRedisUrl(f.redis);
    if (!parsed.ok()) return parsed.status();
    endpoint = *parsed;
  }

  struct Mode {
    std::string name;
    std::optional<bool> sync;  // nullopt: no store
    std::unique_ptr<Engine> engine;
    std::vector<double> turn_ms;
  };
  std::vector<Mode> modes;
  modes.push_back({"no_store", std::nullopt, nullptr, {}});
  modes.push_back({"write_behind", false, nullptr, {}});
  modes.push_back({"sync", true, nullptr, {}});
  for (Mode& mode : modes) {
    EngineOptions options;
    options.model_dir = model->dir;
    options.backend.kind = BackendKind::kCpu;
    options.backend.num_slots = 2;
    options.backend.num_threads = f.threads;
    options.scheduler.max_batch = 1;
    if (mode.sync) {
      StoredSessionsOptions store;
      store.store.endpoint = endpoint;
      store.store.key_prefix = "mambaserve-bench:";
      store.sync = *mode.sync;
      options.session_store = store;
    }
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(std::move(options));
    if (!engine.ok()) return engine.status();
    mode.engine = *std::move(engine);
    std::promise<absl::StatusOr<SessionInfo>> created;
    mode.engine->CreateSession("bench-" + mode.name,
                               [&](absl::StatusOr<SessionInfo> s) { created.set_value(s); });
    if (absl::StatusOr<SessionInfo> s = created.get_future().get(); !s.ok()) return s.status();
  }
  const int64_t vocab = model->config.vocab_size;
  for (int round = 0; round <= f.rounds; ++round) {  // round 0 warms up and is not counted
    std::vector<int32_t> prompt(static_cast<size_t>(f.prompt_tokens));
    for (size_t i = 0; i < prompt.size(); ++i)
      prompt[i] = static_cast<int32_t>((round * 131 + static_cast<int>(i) * 7919) % vocab);
    for (Mode& mode : modes) {
      absl::StatusOr<double> ms = TurnMs(*mode.engine, "bench-" + mode.name, prompt, f.generate);
      if (!ms.ok()) return ms.status();
      if (round > 0) mode.turn_ms.push_back(*ms);
    }
    std::cerr << "\rround " << round << "/" << f.rounds << std::flush;
  }
  std::cerr << "\n";

  nlohmann::json result;
  result["preset"] = f.preset;
  result["prompt_tokens"] = f.prompt_tokens;
  result["generated_tokens"] = f.generate;
  result["state_bytes"] = model->config.state_bytes();
  const double base = Percentile(modes[0].turn_ms, 0.5);
  for (Mode& mode : modes) {
    nlohmann::json m = Summary(mode.turn_ms);
    m["added_p50_ms_vs_no_store"] = Percentile(mode.turn_ms, 0.5) - base;
    if (std::optional<SessionStoreStats> s = mode.engine->session_store_stats()) {
      m["store_writes"] = s->writes;
      m["mean_write_ms"] =
          s->writes > 0 ? 1000 * s->write_seconds / static_cast<double>(s->writes) : 0;
      m["blob_bytes_per_write"] = s->writes > 0 ? s->write_bytes / s->writes : 0;
    }
    result["turns"][mode.name] = m;
    std::cout << mode.name << ": turn p50 " << Percentile(mode.turn_ms, 0.5) << " ms (+"
              << Percentile(mode.turn_ms, 0.5) - base << " ms)\n";
  }
  // Falcon-Mamba-7B: 64 layers, d_inner 8192, d_conv 4 (3 kept), d_state 16, float32.
  const int64_t falcon_7b_state = int64_t{4} * 64 * 8192 * (3 + 16);
  for (const auto& [name, bytes] :
       {std::pair<std::string, int64_t>{f.preset + "_state", model->config.state_bytes()},
        {"falcon_mamba_7b_state", falcon_7b_state}}) {
    absl::StatusOr<nlohmann::json> raw = RawStore(endpoint, bytes, f.raw_iterations);
    if (!raw.ok()) return raw.status();
    result["raw"][name] = *raw;
    std::cout << name << " (" << bytes << " B): write p50 " << (*raw)["write"]["p50_ms"]
              << " ms, read p50 " << (*raw)["read"]["p50_ms"] << " ms\n";
  }
  return WriteOutputFile(f.out_path, result.dump(2) + "\n");
}

}  // namespace
}  // namespace mambaserve

int main(int argc, char** argv) {
  return mambaserve::RunSubcommand<mambaserve::BenchFlags>(
      "session_store_bench",
      "What the Redis session store adds to a turn, and what storing a state costs.", argc, argv,
      mambaserve::Run);
}
