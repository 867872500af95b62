#include "server/grpc_endpoint.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/serving_metrics_adapter.h"
#include "server/unparsable_request_interceptor.h"

namespace mambaserve {

void GrpcEndpoint::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  // Per service: the overload without a name would flip every service, liveness included.
  health->SetServingStatus("", serving);
  health->SetServingStatus(kServiceName, serving);
}

absl::Status ValidateListenAddress(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return absl::OkStatus();
  const size_t colon = listen.rfind(':');
  const std::string port = colon == std::string::npos ? "" : listen.substr(colon + 1);
  uint32_t value = 0;
  if (port.empty() || !absl::SimpleAtoi(port, &value) || value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", listen,
                     "\" needs a port in [0, 65535] (HOST:PORT; 0 picks a free one)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GrpcEndpoint> StartGrpcEndpoint(MambaServeService* service,
                                               const GrpcEndpointOptions& options) {
  RETURN_IF_ERROR(ValidateListenAddress(options.listen));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  // First, so that the metrics see the status it corrects.
  interceptors.push_back(std::make_unique<UnparsableRequestInterceptorFactory>());
  interceptors.push_back(std::make_unique<GrpcMetricsInterceptorFactory>(service->metrics_slot()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // gRPC sets SO_REUSEPORT by default: a second server on the same port would start and the kernel
  // would split connections (and so sessions) between the two at random. Refuse to share instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  GrpcEndpoint endpoint;
  builder.AddListeningPort(
      options.listen, options.credentials ? options.credentials : grpc::InsecureServerCredentials(),
      &endpoint.port);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_receive_bytes));
  endpoint.server = builder.BuildAndStart();
  if (endpoint.server == nullptr ||
      (endpoint.port == 0 && !absl::StartsWith(options.listen, "unix:"))) {
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", options.listen,
                     " (in use by another process, or not an address of this host)"));
  }
  endpoint.SetServing(false);
  // Liveness: SERVING for as long as the process answers, through loading and draining alike, so
  // a liveness probe never kills a replica that is busy finishing its streams.
  endpoint.server->GetHealthCheckService()->SetServingStatus(GrpcEndpoint::kLivenessService, true);
  return endpoint;
}

}  // namespace mambaserve
