// The mambaserve.v1.MambaServe gRPC service (callback API). Reactions never block and never call
// the backend: requests are validated and tokenized here, then handed to the Scheduler; session
// operations run on the scheduler thread and complete their RPC from there.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/model.h"
#include "engine/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"
#include "server/metrics/serving_metrics.h"

namespace mambaserve {

// Everything the RPCs need once the model is loaded and warmed up.
struct ServingEngine {
  std::string model_dir;
  std::shared_ptr<const Model> model;
  std::unique_ptr<Backend> backend;
  BackendInfo backend_info;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the model directory has no tokenizer.json
  std::unique_ptr<Scheduler> scheduler;
};

struct ServiceLimits {
  int max_prompt_tokens = 8192;
  int default_max_tokens = 256;
  SamplingLimits sampling;
  int stream_buffer = 16;  // responses buffered per stream before its sequence pauses
};

// absl::Status -> grpc::Status (the codes share their numbering).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Generate takes its request as raw bytes so that a request protobuf refuses to parse (a string
// field with invalid UTF-8) gets INVALID_ARGUMENT saying so, instead of gRPC's bare UNIMPLEMENTED.
class MambaServeService final : public v1::MambaServe::WithRawCallbackMethod_Generate<v1::MambaServe::CallbackService> {
 public:
  explicit MambaServeService(ServiceLimits limits) : limits_(limits) {}

  // Publishes the engine; until then every RPC answers UNAVAILABLE. The engine must outlive the
  // server's last RPC.
  void SetEngine(ServingEngine* engine) { engine_.store(engine, std::memory_order_release); }
  const ServiceLimits& limits() const { return limits_; }
  // Shutdown: later Generate calls get UNAVAILABLE.
  void StopAccepting() { accepting_.store(false); }
  bool accepting() const { return accepting_.load(); }
  // Generate streams not yet done (their reactors still live).
  int open_streams() const { return open_streams_.load(); }
  void AddOpenStream(int delta) { open_streams_.fetch_add(delta); }
  ServingEngine* engine() const { return engine_.load(std::memory_order_acquire); }
  // Prometheus metrics (null: not recorded). Must outlive the server's last RPC.
  void SetMetrics(metrics::ServingMetrics* m) { metrics_.store(m, std::memory_order_release); }
  metrics::ServingMetrics* metrics() const { return metrics_.load(std::memory_order_acquire); }
  const std::atomic<metrics::ServingMetrics*>* metrics_slot() const { return &metrics_; }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* context,
                                          const v1::CreateSessionRequest* request, v1::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context, const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* context,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* ExportSession(grpc::CallbackServerContext* context,
                                          const v1::ExportSessionRequest* request,
                                          v1::ExportSessionResponse* response) override;
  grpc::ServerUnaryReactor* ImportSession(grpc::CallbackServerContext* context,
                                          const v1::ImportSessionRequest* request, v1::Session* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context, const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request, v1::ModelInfo* response) override;

 private:
  // Runs `task` on the scheduler thread and finishes the RPC with its status.
  grpc::ServerUnaryReactor* OnSchedulerThread(grpc::CallbackServerContext* context,
                                              std::function<absl::Status(SessionManager&)> task);

  absl::StatusOr<const Tokenizer*> ReadyTokenizer() const;

  ServiceLimits limits_;
  std::atomic<ServingEngine*> engine_{nullptr};
  std::atomic<bool> accepting_{true};
  std::atomic<int> open_streams_{0};
  std::atomic<metrics::ServingMetrics*> metrics_{nullptr};
};

}  // namespace mambaserve
