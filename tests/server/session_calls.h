// Session calls in one line each, for end-to-end tests that make many of them as different
// callers. A non-empty `token` is sent as "authorization: Bearer TOKEN".
#pragma once

#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"

namespace mambaserve::testing {

inline void Authorize(grpc::ClientContext& context, const std::string& token) {
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
}

inline grpc::Status CreateSession(v1::MambaServe::Stub& stub, const std::string& id,
                                  const std::string& token = "") {
  grpc::ClientContext context;
  Authorize(context, token);
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  v1::Session session;
  return stub.CreateSession(&context, request, &session);
}

inline grpc::Status GetSession(v1::MambaServe::Stub& stub, const std::string& id,
                               const std::string& token = "") {
  grpc::ClientContext context;
  Authorize(context, token);
  v1::GetSessionRequest request;
  request.set_session_id(id);
  v1::Session session;
  return stub.GetSession(&context, request, &session);
}

// The ids ListSessions returns (the call must succeed).
inline std::vector<std::string> ListSessionIds(v1::MambaServe::Stub& stub,
                                               const std::string& token = "") {
  grpc::ClientContext context;
  Authorize(context, token);
  v1::ListSessionsResponse response;
  const grpc::Status status = stub.ListSessions(&context, {}, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<std::string> ids;
  for (const auto& s : response.sessions()) ids.push_back(s.session_id());
  return ids;
}

}  // namespace mambaserve::testing
