// The serving process: the gRPC endpoint, Prometheus /metrics, the engine, and graceful shutdown
// on SIGTERM / SIGINT.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/proto_convert.h"
#include "server/tls.h"

namespace mambaserve {

struct ServeOptions {
  EngineOptions engine;  // engine.model_dir: a Hugging Face checkpoint directory
  ServiceLimits limits;
  // Runs once the server listens (health NOT_SERVING) and before the model loads, e.g. to
  // generate the default model into the model directory.
  std::function<absl::Status()> prepare_model;
  std::string listen = "127.0.0.1:50051";
  std::string port_file;  // if set, the bound port is written here once listening
  int shutdown_grace_s = 10;
  // Prometheus /metrics on its own HTTP port; empty disables. A port that cannot be bound is
  // logged and serving goes on without metrics.
  std::string metrics_listen = "127.0.0.1:9400";
  std::string served_model_name;  // the model_name label; default: the model directory's name
  // "TOKEN PRINCIPAL" lines (server/auth.h); empty: no authentication, one shared session scope.
  std::string auth_tokens_file;
  // TLS on the gRPC port; with a client CA (mutual TLS) and no auth_tokens_file, each caller's
  // principal is its certificate's common name.
  TlsFiles tls;
};

// Runs until SIGTERM or SIGINT, then stops accepting, lets streams finish for up to
// shutdown_grace_s, cancels the rest and returns OK. Call from main with no other threads started.
absl::Status RunServer(const ServeOptions& options);

}  // namespace mambaserve
