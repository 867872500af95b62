// gRPC's callback handlers (1.51) answer a request whose bytes do not parse as the method's message
// with UNIMPLEMENTED and no message, as if the method did not exist. This interceptor notices the
// failed parse (after POST_RECV_MESSAGE the received message is null) and makes that answer
// INVALID_ARGUMENT saying what could not be parsed. Generate parses its own request and says so
// itself.
#pragma once

#include "grpcpp/support/server_interceptor.h"

namespace mambaserve {

class UnparsableRequestInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace mambaserve
