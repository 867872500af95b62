// Protobuf <-> engine types, at the edge: nothing past server/ sees a proto, nothing here sees the
// backend. Requests are validated here with messages that name the field.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "mambaserve/v1/mambaserve.pb.h"

namespace mambaserve {

struct ServiceLimits {
  int max_prompt_tokens = 8192;
  int default_max_tokens = 256;
  SamplingLimits sampling;
  int stream_buffer = 16;             // responses buffered per stream before its sequence pauses
  int max_detokenize_ids = 65536;     // ids one Detokenize call may carry
  int max_streams_per_principal = 0;  // open Generate streams per principal; 0: no limit
  // --log-prompts: each Generate log line also carries the prompt and the generated text (off by
  // default: conversations are the tenants' data, not the operator's).
  bool log_prompts = false;
};

// absl::Status -> grpc::Status (the codes share their numbering).
grpc::Status ToGrpcStatus(const absl::Status& status);

void ToProto(const SessionInfo& info, v1::Session* out);
v1::FinishReason ToProto(FinishReason reason);

// The session a request names: its field or the x-session-id header; both must agree.
absl::StatusOr<std::string> RequestSessionId(const grpc::CallbackServerContext& context,
                                             const std::string& field);

// A validated, tokenized GenerationRequest (without its stream) for `request`.
absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      std::string session_id, const Engine& engine,
                                                      const ServiceLimits& limits);

// The response for one engine event; alternatives' token strings come from `tokenizer` (may be
// null).
void ToProto(const GenerationEvent& event, const Tokenizer* tokenizer, v1::GenerateResponse* out);

}  // namespace mambaserve
