// Where mambabench sends its streams: a server over gRPC, or an Engine in this process (the same
// workload without the network, protobuf and reactors, so the two measured side by side are the
// server's overhead).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mambaserve::bench {

struct BenchRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 0;
  std::string session_id;  // empty: no session
  // Called on the stream's thread with the number of tokens received so far, as they arrive.
  std::function<void(int64_t)> on_tokens;
};

// One stream as the client saw it.
struct StreamResult {
  int code = 0;  // gRPC status code (absl's are the same numbers); 0: OK
  std::string error;
  double ttft_s = -1;                 // first token's arrival, from the call
  std::vector<double> inter_token_s;  // one per token after the first
  double e2e_s = 0;
  std::vector<int32_t> tokens;
};

class Target {
 public:
  virtual ~Target() = default;
  virtual int64_t vocab_size() const = 0;
  virtual StreamResult Generate(const BenchRequest& request) = 0;  // greedy, ignore_eos
  virtual absl::Status CreateSession(const std::string& id) = 0;
  virtual absl::Status DeleteSession(const std::string& id) = 0;
};

// A server at HOST:PORT (plaintext); fails when its GetModelInfo does not answer.
absl::StatusOr<std::unique_ptr<Target>> ConnectGrpcTarget(const std::string& address);
// An Engine on the CPU backend over `model_dir`, sized like a server with these settings.
absl::StatusOr<std::unique_ptr<Target>> StartInProcessTarget(const std::string& model_dir,
                                                             int threads, int max_batch);

}  // namespace mambaserve::bench
