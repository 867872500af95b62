// Serves a Collection at GET /metrics over HTTP on its own port, through prometheus-cpp's Exposer
// (civetweb worker threads): a scrape runs Collection::Collect() on a civetweb thread and never
// touches the scheduler thread or the gRPC completion queues. prometheus-cpp adds its own
// exposer_transferred_bytes_total, exposer_scrapes_total and exposer_request_latencies families.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/metrics/collection.h"

namespace prometheus {
class Exposer;
}

namespace mambaserve::metrics {

class MetricsEndpoint {
 public:
  // `listen`: "127.0.0.1:9400", "[::1]:9400" or "9400" (all interfaces); port 0 picks a free one.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      std::shared_ptr<Collection> collection, const std::string& listen);
  ~MetricsEndpoint();  // stops the server and joins its threads
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;

  std::shared_ptr<Collection> collection_;  // the exposer holds only a weak reference
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

// The port of "host:port" / "[v6]:port" / "port", for flag validation.
absl::StatusOr<int> ParseListenPort(const std::string& listen);

}  // namespace mambaserve::metrics
