// The serving process: gRPC server (MambaServe + grpc.health.v1.Health + reflection), model
// loading and warm-up, and graceful shutdown on SIGTERM / SIGINT.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "engine/backend.h"

namespace mambaserve {

struct ServeOptions {
  std::string model_dir;               // a Hugging Face checkpoint directory
  // Runs once the server listens (health NOT_SERVING) and before the model loads, e.g. to
  // generate the default model into model_dir.
  std::function<absl::Status()> prepare_model;
  std::string listen = "127.0.0.1:50051";
  std::string port_file;               // if set, the bound port is written here once listening
  int max_sessions = 128;              // state slots: running sequences + resident sessions
  int max_batch = 64;
  int max_queue = 256;
  int max_step_tokens = 256;
  BackendKind backend = BackendKind::kAuto;
  std::optional<DType> weight_dtype;
  int threads = 0;
  double gpu_memory_fraction = 0.9;    // CUDA: share of device memory the process may use
  int gpu_device = 0;
  int max_prompt_tokens = 8192;
  int max_tokens_limit = 4096;
  int default_max_tokens = 256;
  int64_t session_ttl_s = 3600;
  int64_t max_named_sessions = 65536;  // sessions that may exist at once (resident, parked or unused)
  int64_t host_state_budget_mb = 1024;
  int stream_buffer = 16;
  int64_t stalled_reader_timeout_s = 120;  // a stream unread this long (buffer full) is ended
  int shutdown_grace_s = 10;
  // Prometheus /metrics on its own HTTP port; empty disables. A port that cannot be bound is
  // logged and serving goes on without metrics.
  std::string metrics_listen = "127.0.0.1:9400";
  std::string served_model_name;  // the model_name label; default: the model directory's name
};

// Runs until SIGTERM or SIGINT, then stops accepting, lets streams finish for up to
// shutdown_grace_s, cancels the rest and returns OK. Call from main with no other threads started.
absl::Status RunServer(const ServeOptions& options);

}  // namespace mambaserve
