// Serves a Registry's exposition at GET /metrics over HTTP/1.1 on its own port, from civetweb's
// worker threads: a scrape runs Registry::Serialize() on a civetweb thread and never touches the
// scheduler thread or the gRPC completion queues.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/metrics/registry.h"

struct mg_context;
struct mg_connection;

namespace mambaserve::metrics {

struct HttpExposerOptions {
  // civetweb listening_ports syntax: "127.0.0.1:9400", "[::1]:9400", "9400" (all interfaces);
  // port 0 picks a free port (see port()).
  std::string listen = "127.0.0.1:9400";
  int num_threads = 2;  // concurrent scrapes; Prometheus uses one connection per target
  int request_timeout_ms = 10000;
};

class HttpExposer {
 public:
  // `registry` must outlive the exposer.
  static absl::StatusOr<std::unique_ptr<HttpExposer>> Start(const Registry* registry,
                                                            const HttpExposerOptions& options);
  ~HttpExposer();  // stops the server and joins its threads
  HttpExposer(const HttpExposer&) = delete;
  HttpExposer& operator=(const HttpExposer&) = delete;

  int port() const { return port_; }
  uint64_t scrapes() const { return scrapes_.load(std::memory_order_relaxed); }

 private:
  explicit HttpExposer(const Registry* registry) : registry_(registry) {}
  static int HandleMetrics(mg_connection* conn, void* self);
  static int HandleRoot(mg_connection* conn, void* self);

  const Registry* registry_;
  mg_context* context_ = nullptr;
  int port_ = 0;
  std::atomic<uint64_t> scrapes_{0};
};

// Splits "host:port" / "[v6]:port" / "port" for flag validation; returns the port or an error.
absl::StatusOr<int> ParseListenPort(const std::string& listen);

}  // namespace mambaserve::metrics
