// The engine's front door. Engine::Create loads a checkpoint and its tokenizer, picks the backend,
// warms it up and starts the scheduler; then Submit streams generations and the session operations
// run asynchronously. The gRPC server, the CLI and the benchmarks all go through here.
//
// Threads: the scheduler thread owns the backend and only steps; session operations run on the
// engine's own workers (blob encoding, decoding and checksums never stall a step or a gRPC thread)
// and call back from there. Every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/base/worker_pool.h"
#include "engine/model/model.h"
#include "engine/serving/generation.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/session_manager.h"
#include "engine/session_store/stored_sessions.h"
#include "engine/tokenizer/tokenizer.h"

namespace mambaserve {

struct EngineOptions {
  std::string model_dir;  // a Hugging Face checkpoint directory
  // num_slots: state slots for running sequences and resident sessions.
  BackendOptions backend;
  SchedulerOptions scheduler;
  int max_prompt_tokens = 8192;  // also bounds the pending tokens an imported session may carry
  int session_workers = 2;
  // Sessions also kept in a Redis store shared by every replica (StoredSessions); unset: sessions
  // live in this process only.
  std::optional<StoredSessionsOptions> session_store;
};

// What the engine serves, fixed once it is created.
struct EngineInfo {
  ModelConfig config;
  std::string fingerprint;
  BackendInfo backend;
  std::string backend_fallback_reason;  // why --backend auto chose the CPU; empty otherwise
  int64_t tokenizer_vocab_size = 0;     // 0 without a tokenizer
  int max_batch = 0;
  int max_queue = 0;
  size_t max_session_blob_bytes = 0;  // the largest blob ImportSession can accept
};

class Engine {
 public:
  template <typename T>
  using Callback = std::function<void(absl::StatusOr<T>)>;

  // Loads, creates the backend, warms it up (one prefill and decode), starts the scheduler.
  // Refuses sizes whose memory this machine cannot hold, naming the option.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options);
  ~Engine();  // Stop()

  const EngineInfo& info() const { return info_; }
  const Model& model() const { return *model_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }  // null: token-id prompts only
  const SchedulerStatsPublisher& stats() const { return scheduler_->stats(); }

  // See Scheduler::Submit: refused at once, or accepted and ended by the stream's final event.
  absl::Status Submit(GenerationRequest request);

  // Session operations. Each returns at once; `done` runs exactly once, on an engine worker (or on
  // the calling thread when the engine is stopping or too many operations wait:
  // UNAVAILABLE / RESOURCE_EXHAUSTED). For ImportSession the blob bytes must stay valid until then.
  void CreateSession(std::string id, Callback<SessionInfo> done);
  void GetSession(std::string id, Callback<SessionInfo> done);
  // Sessions whose id starts with `owner_scope` ("PRINCIPAL/"; empty: all), ordered by id.
  void ListSessions(std::string owner_scope, Callback<std::vector<SessionInfo>> done);
  void DeleteSession(std::string id, std::function<void(absl::Status)> done);
  void ExportSession(std::string id, Callback<std::string> done);
  void ImportSession(std::string id, std::span<const uint8_t> blob, Callback<SessionInfo> done);
  // A new session `id` (empty or a scope alone: named by the server) with a copy of `source`'s
  // conversation (SessionManager::Fork).
  void ForkSession(std::string source, std::string id, Callback<SessionInfo> done);

  // With a session store: waits for turns being stored, then stores every session whose newest
  // turn is not in the store yet (a draining replica's sessions continue elsewhere).
  absl::Status FlushSessionStore(std::chrono::steady_clock::time_point deadline);
  std::optional<SessionStoreStats> session_store_stats() const;

  // Ends every request still waiting or running (UNAVAILABLE with `why`), runs the session
  // operations already posted, joins. Idempotent.
  void Stop(std::string why = "the server is shutting down; retry on another replica");

 private:
  Engine() = default;
  // Runs `op` on a worker, or `refused(status)` here when it cannot be queued.
  void Post(std::function<void()> op, const std::function<void(absl::Status)>& refused);

  EngineInfo info_;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<StoredSessions> stored_;  // null without a session store
  std::unique_ptr<WorkerPool> session_workers_;
  std::atomic<bool> stopped_{false};
};

}  // namespace mambaserve
