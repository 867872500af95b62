#include "server/metrics/metrics_endpoint.h"

#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace mambaserve::metrics {

absl::StatusOr<int> ParseListenPort(const std::string& listen) {
  absl::string_view port_text = listen;
  if (const size_t colon = port_text.rfind(':'); colon != absl::string_view::npos) {
    port_text = port_text.substr(colon + 1);
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen, "\" needs a port, e.g. 127.0.0.1:9400"));
  }
  return port;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    std::shared_ptr<Collection> collection, const std::string& listen) {
  if (absl::StatusOr<int> port = ParseListenPort(listen); !port.ok()) return port.status();
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  endpoint->collection_ = std::move(collection);
  try {
    // Two threads: Prometheus keeps one connection per target; the second serves a person's curl.
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", listen, "num_threads", "2",
                                 "request_timeout_ms", "10000", "enable_keep_alive", "yes"});
    endpoint->exposer_->RegisterCollectable(endpoint->collection_);
    const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
    if (ports.empty()) return absl::UnavailableError("metrics endpoint: no listening port");
    endpoint->port_ = ports.front();
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics endpoint: cannot listen on ", listen, ": ", e.what()));
  }
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace mambaserve::metrics
