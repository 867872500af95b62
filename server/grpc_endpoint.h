// The gRPC server: MambaServe, grpc.health.v1.Health and reflection on one port, with the metrics
// interceptor. The port is this process's alone: a second server on it is refused at start.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/service.h"

namespace mambaserve {

struct GrpcEndpointOptions {
  std::string listen = "127.0.0.1:50051";  // HOST:PORT, [IPv6]:PORT or unix:PATH; port 0 picks one
  int64_t max_receive_bytes = 4 << 20;     // the largest request any method accepts
  // Plaintext when null; see server/tls.h.
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

struct GrpcEndpoint {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  // The service's name in grpc.health.v1 (also reported with the overall status "").
  static constexpr char kServiceName[] = "mambaserve.v1.MambaServe";
  // Always SERVING while the process runs (liveness probes); "" and kServiceName are readiness.
  static constexpr char kLivenessService[] = "liveness";
  void SetServing(bool serving);
};

// InvalidArgument for an address whose port is not a number in [0, 65535].
absl::Status ValidateListenAddress(const std::string& listen);

// Starts serving `service` (health NOT_SERVING until SetServing(true)). Unavailable when the
// address cannot be bound, including when another process already listens there.
absl::StatusOr<GrpcEndpoint> StartGrpcEndpoint(MambaServeService* service,
                                               const GrpcEndpointOptions& options);

}  // namespace mambaserve
