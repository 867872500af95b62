// A stand-in for a serving mambaserve process: drives ServingMetrics with deterministic synthetic
// traffic against a simulated scheduler (slots, sessions, steps) and serves /metrics, so the
// Prometheus, promtool and dashboard checks run without a model. Writes what it sent as JSON so a
// test can compare Prometheus's numbers with the truth.
//
//   metrics_test_exporter --dump                   traffic without delays, exposition to stdout
//   metrics_test_exporter --listen 127.0.0.1:0 --port-file F --summary S [--requests N]
//                         [--concurrency C] [--token-ms T] [--ramp-seconds R] [--start-file G]
//                         [--linger SECONDS] [--model-name NAME]
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/metrics/collection.h"
#include "server/metrics/metrics_endpoint.h"
#include "server/metrics/process_metrics.h"
#include "server/metrics/serving_metrics.h"

namespace mambaserve::metrics {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Flags {
  bool dump = false;
  std::string listen = "127.0.0.1:9400";
  std::string port_file, summary, start_file;
  int requests = 60;
  int concurrency = 6;
  double token_ms = 8;
  double linger = 3600;
  double ramp_seconds = 0;  // worker w starts at w * ramp / concurrency: load climbs in steps
  std::string model_name = "falcon-mamba-7b";
};

// The simulated scheduler's published state: written by traffic threads, copied by scrapes.
class SimulatedEngine : public EngineStatsSource {
 public:
  static constexpr int kSlots = 8;
  static constexpr int kMaxIdleResident = 3;
  static constexpr int kMaxParked = 64;  // host-memory budget for parked sessions
  // Falcon-Mamba-7B: 64 layers x d_inner 8192 x (d_state 16 + d_conv-1 3) x 4 bytes.
  static constexpr int64_t kStateBytes = 64LL * 8192 * 19 * 4;
  static constexpr int64_t kWeightBytes = 14546000000;  // ~7.27e9 bf16 parameters

  EngineStats Snapshot() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  EngineStats& Lock(std::unique_lock<std::mutex>* lock) {
    *lock = std::unique_lock<std::mutex>(mu_);
    return stats_;
  }
  std::mutex& mu() { return mu_; }
  std::condition_variable& slot_freed() { return slot_freed_; }

  SimulatedEngine() {
    stats_.slots_total = kSlots;
    stats_.state_bytes_per_session = kStateBytes;
    stats_.state_pool_bytes = kSlots * kStateBytes;
    stats_.device_memory_total_bytes = 85899345920;  // an 80 GiB device
    // Weights and the state pool are allocated at start; nothing grows with tokens.
    stats_.device_memory_used_bytes = kWeightBytes + stats_.state_pool_bytes;
    stats_.sessions_live = 0;
    stats_.sessions_created = stats_.sessions_resumed = stats_.sessions_parked = 0;
    stats_.sessions_restored = stats_.sessions_evicted = stats_.sessions_expired = 0;
    // A session store: every completed session turn is written (38 MiB in ~0.22 s).
    stats_.session_store_loads = stats_.session_store_writes = 0;
    stats_.session_store_written_bytes = stats_.session_store_lease_conflicts = 0;
    stats_.session_store_errors = stats_.session_store_unstored_sessions = 0;
    stats_.session_store_write_seconds = 0;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable slot_freed_;
  EngineStats stats_;
};

struct Totals {
  std::mutex mu;
  int64_t sent = 0, admitted = 0, prompt_tokens = 0, generation_tokens = 0;
  std::map<std::string, int64_t> rejected, finished, grpc;
};

void Sleep(const Flags& flags, double ms) {
  if (!flags.dump && ms > 0)
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
}

// One request through admission, queue, prefill, decode and finish. Session bookkeeping keeps
// live = resident idle + parked + running sessions, as a real session manager would.
void RunRequest(int i, const Flags& flags, ServingMetrics* metrics, SimulatedEngine* engine,
                Totals* totals) {
  const int64_t prompt = 16 + (i * 37) % 200;
  const int64_t max_tokens = 8 + (i * 13) % 40;
  const bool session = i % 2 == 0;
  const bool new_session = i % 4 == 0;
  {
    std::lock_guard<std::mutex> lock(totals->mu);
    ++totals->sent;
  }
  if (i % 11 == 5) {  // the admission queue is full
    metrics->RequestRejected("queue_full");
    metrics->GrpcCallCompleted("Generate", 8);
    std::lock_guard<std::mutex> lock(totals->mu);
    ++totals->rejected["queue_full"];
    ++totals->grpc["Generate/RESOURCE_EXHAUSTED"];
    return;
  }
  if (i % 17 == 3) {  // a second request on a busy session
    metrics->RequestRejected("session_busy");
    metrics->GrpcCallCompleted("Generate", 9);
    std::lock_guard<std::mutex> lock(totals->mu);
    ++totals->rejected["session_busy"];
    ++totals->grpc["Generate/FAILED_PRECONDITION"];
    return;
  }
  metrics->RequestAdmitted();
  RequestTimer timer(metrics, prompt);
  {
    std::unique_lock<std::mutex> lock;
    EngineStats& s = engine->Lock(&lock);
    ++s.requests_waiting;
    // A slot: the session's own resident one, a free one, or one freed by parking an idle session.
    engine->slot_freed().wait(lock, [&] {
      return s.slots_active + s.slots_idle_resident < s.slots_total || s.slots_idle_resident > 0;
    });
    --s.requests_waiting;
    ++s.requests_running;
    ++s.slots_active;
    if (session && !new_session && s.slots_idle_resident > 0) {
      --s.slots_idle_resident;  // its state is still on the device
      ++s.sessions_resumed;
    } else {
      if (s.slots_active + s.slots_idle_resident > s.slots_total) {
        --s.slots_idle_resident;  // least recently used idle session moves to host memory
        ++s.sessions_parked_on_host;
        ++s.sessions_parked;
      }
      if (session && !new_session && s.sessions_parked_on_host > 0) {
        --s.sessions_parked_on_host;
        ++s.sessions_restored;
      } else if (session) {
        ++s.sessions_created;
        ++s.sessions_live;
      }
    }
  }
  Sleep(flags, 2 + (i % 5) * 3);  // waiting for the next step
  timer.Scheduled();
  Sleep(flags, static_cast<double>(prompt) * 0.05);  // prefill
  const bool abort = i % 7 == 6;
  const int64_t produce = abort ? max_tokens / 2 : (i % 3 == 0 ? max_tokens : max_tokens - 3);
  for (int64_t t = 0; t < produce; ++t) {
    timer.Tokens();
    const int64_t batch = engine->Snapshot().requests_running;
    const int64_t step_tokens = batch + (t == 0 ? prompt : 0);
    metrics->StepCompleted(
        batch, step_tokens,
        0.002 + 0.0008 * static_cast<double>(batch) + 0.00002 * static_cast<double>(step_tokens));
    Sleep(flags, flags.token_ms * (0.75 + 0.5 * ((i + t) % 3) / 2.0));
  }
  const FinishReason reason =
      abort ? FinishReason::kAbort : (i % 3 == 0 ? FinishReason::kLength : FinishReason::kStop);
  timer.Finish(reason);
  metrics->GrpcCallCompleted("Generate", abort ? 1 : 0);
  {
    std::unique_lock<std::mutex> lock;
    EngineStats& s = engine->Lock(&lock);
    --s.requests_running;
    --s.slots_active;
    if (session && !abort) {
      ++s.session_store_writes;
      s.session_store_written_bytes += SimulatedEngine::kStateBytes;
      s.session_store_write_seconds += 0.22;
    }
    if (session && s.slots_idle_resident < SimulatedEngine::kMaxIdleResident) {
      ++s.slots_idle_resident;
    } else if (session) {
      ++s.sessions_parked_on_host;
      ++s.sessions_parked;
    }
    if (s.sessions_parked_on_host > SimulatedEngine::kMaxParked) {  // over the host budget
      --s.sessions_parked_on_host;
      --s.sessions_live;
      ++s.sessions_evicted;
    }
    if (i % 13 == 12 && s.sessions_parked_on_host > 0) {  // an old parked session passes its TTL
      --s.sessions_parked_on_host;
      --s.sessions_live;
      ++s.sessions_expired;
    }
    engine->slot_freed().notify_all();
  }
  std::lock_guard<std::mutex> lock(totals->mu);
  ++totals->admitted;
  totals->prompt_tokens += prompt;
  totals->generation_tokens += produce;
  ++totals->finished[std::string(FinishReasonLabel(reason))];
  ++totals->grpc[abort ? "Generate/CANCELLED" : "Generate/OK"];
}

std::string ToJson(const Totals& t) {
  auto map_json = [](const std::map<std::string, int64_t>& m) {
    std::string out = "{";
    for (const auto& [k, v] : m) {
      if (out.size() > 1) out += ", ";
      out += "\"" + k + "\": " + std::to_string(v);
    }
    return out + "}";
  };
  return "{\"requests_sent\": " + std::to_string(t.sent) +
         ", \"admitted\": " + std::to_string(t.admitted) +
         ", \"prompt_tokens\": " + std::to_string(t.prompt_tokens) +
         ", \"generation_tokens\": " + std::to_string(t.generation_tokens) +
         ", \"rejected\": " + map_json(t.rejected) + ", \"finished\": " + map_json(t.finished) +
         ", \"grpc\": " + map_json(t.grpc) + "}\n";
}

void WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

int Main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--dump")
      flags.dump = true;
    else if (arg == "--listen")
      flags.listen = value();
    else if (arg == "--port-file")
      flags.port_file = value();
    else if (arg == "--summary")
      flags.summary = value();
    else if (arg == "--start-file")
      flags.start_file = value();
    else if (arg == "--requests")
      flags.requests = std::stoi(value());
    else if (arg == "--concurrency")
      flags.concurrency = std::max(1, std::stoi(value()));
    else if (arg == "--token-ms")
      flags.token_ms = std::stod(value());
    else if (arg == "--linger")
      flags.linger = std::stod(value());
    else if (arg == "--ramp-seconds")
      flags.ramp_seconds = std::stod(value());
    else if (arg == "--model-name")
      flags.model_name = value();
    else {
      std::cerr << "unknown flag " << arg << "\n";
      return 2;
    }
  }

  auto collection = std::make_shared<Collection>();
  auto metrics = ServingMetrics::Create(collection.get(), {.model_name = flags.model_name,
                                                           .version = "0.1.0",
                                                           .backend = "cuda",
                                                           .dtype = "bf16",
                                                           .max_model_len = 1000000});
  if (!metrics.ok()) {
    std::cerr << metrics.status() << "\n";
    return 1;
  }
  collection->AddCollector(std::make_shared<ProcessCollector>());
  auto engine = std::make_shared<SimulatedEngine>();
  (*metrics)->SetEngineStatsSource(engine);
  (*metrics)->GrpcCallCompleted("GetModelInfo", 0);
  (*metrics)->GrpcCallCompleted("DeleteSession", 5);

  std::unique_ptr<MetricsEndpoint> exposer;
  if (!flags.dump) {
    signal(SIGTERM, OnSignal);
    signal(SIGINT, OnSignal);
    auto started = MetricsEndpoint::Start(collection, flags.listen);
    if (!started.ok()) {
      std::cerr << started.status() << "\n";
      return 1;
    }
    exposer = std::move(*started);
    if (!flags.port_file.empty()) {
      WriteFileAtomically(flags.port_file, std::to_string(exposer->port()) + "\n");
    }
    // Traffic starts when the test says so (after Prometheus has scraped the zeros), so rates and
    // increases see the whole of it.
    while (!flags.start_file.empty() && !std::filesystem::exists(flags.start_file) && !g_stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  Totals totals;
  std::atomic<int> next{0};
  std::vector<std::thread> workers;
  const auto traffic_start = std::chrono::steady_clock::now();
  for (int w = 0; w < flags.concurrency; ++w) {
    workers.emplace_back([&, w] {
      const auto my_start =
          traffic_start +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double>(flags.ramp_seconds * w / flags.concurrency));
      while (!flags.dump && !g_stop && std::chrono::steady_clock::now() < my_start) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      for (int i = next++; i < flags.requests && !g_stop; i = next++) {
        RunRequest(i, flags, metrics->get(), engine.get(), &totals);
      }
    });
  }
  for (auto& w : workers) w.join();

  if (flags.dump) {
    std::cout << collection->Serialize();
    return 0;
  }
  if (!flags.summary.empty()) WriteFileAtomically(flags.summary, ToJson(totals));
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(flags.linger);
  while (!g_stop && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

}  // namespace
}  // namespace mambaserve::metrics

int main(int argc, char** argv) { return mambaserve::metrics::Main(argc, argv); }
