// The mambaserve.v1.MambaServe gRPC service (callback API): a thin adapter over the Engine.
// Reactions never block: Generate submits and streams (server/generate_reactor), session methods
// hand their work to the engine's workers and finish from there, the rest answer at once.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "engine/base/worker_pool.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"
#include "server/metrics/serving_metrics.h"
#include "server/proto_convert.h"

namespace mambaserve {

class TokenAuthenticator;

// Who is calling. With --auth-tokens (or mutual TLS) every session lives in its owner's scope
// ("PRINCIPAL/NAME" inside the engine), so one principal cannot name another's sessions at all:
// NOT_FOUND exactly as for a name that does not exist, and ListSessions shows only the caller's
// own.
struct Caller {
  std::string principal;  // empty without --auth-tokens or mTLS: one shared scope

  std::string scope() const { return principal.empty() ? "" : principal + "/"; }
  std::string Scoped(const std::string& name) const { return scope() + name; }
  // The session as the caller names it.
  SessionInfo Unscoped(SessionInfo info) const {
    info.id.erase(0, scope().size());
    return info;
  }
};

// Generate takes its request as raw bytes so that a request protobuf refuses to parse (a string
// field with invalid UTF-8) gets INVALID_ARGUMENT saying so, instead of gRPC's bare UNIMPLEMENTED.
class MambaServeService final
    : public v1::MambaServe::WithRawCallbackMethod_Generate<v1::MambaServe::CallbackService> {
 public:
  // `model_name` is what GetModelInfo reports (never a filesystem path).
  MambaServeService(ServiceLimits limits, std::string model_name, int response_writer_threads = 2);

  // Publishes the engine; until then every RPC answers UNAVAILABLE. The engine must outlive the
  // server's last RPC.
  void SetEngine(Engine* engine) { engine_.store(engine, std::memory_order_release); }
  Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  const ServiceLimits& limits() const { return limits_; }
  // Shutdown: later Generate calls get UNAVAILABLE.
  void StopAccepting() { accepting_.store(false); }
  bool accepting() const { return accepting_.load(); }
  // Generate streams not yet done (their reactors still live).
  int open_streams() const { return open_streams_.load(); }
  void AddOpenStream(int delta) { open_streams_.fetch_add(delta); }
  // Threads that serialise and write stream responses, off the scheduler thread.
  WorkerPool& response_writers() { return response_writers_; }
  // Prometheus metrics (null: not recorded). Must outlive the server's last RPC.
  void SetMetrics(metrics::ServingMetrics* m) { metrics_.store(m, std::memory_order_release); }
  metrics::ServingMetrics* metrics() const { return metrics_.load(std::memory_order_acquire); }
  const std::atomic<metrics::ServingMetrics*>* metrics_slot() const { return &metrics_; }
  // Bearer tokens (null: every caller is anonymous and shares one scope). Set before serving; must
  // outlive the server's last RPC.
  void SetAuthenticator(TokenAuthenticator* auth) { auth_ = auth; }
  // Mutual TLS without tokens: the caller's principal is its client certificate's common name.
  void SetPrincipalFromCertificate(bool on) { principal_from_certificate_ = on; }
  // --max-streams-per-principal: false when `principal` already has that many Generate streams
  // open (never for the anonymous principal of a server without --auth-tokens).
  bool OpenPrincipalStream(const std::string& principal);
  void ClosePrincipalStream(const std::string& principal);
  // The caller of `context`: UNAUTHENTICATED without a token this server knows.
  absl::StatusOr<Caller> Authenticate(const grpc::CallbackServerContext& context) const;
  // The session a call names (its field or x-session-id metadata), in the caller's scope; empty
  // when it names none.
  absl::StatusOr<std::string> CallerSessionId(const grpc::CallbackServerContext& context,
                                              const Caller& caller, const std::string& field) const;

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* context,
                                          const v1::CreateSessionRequest* request,
                                          v1::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* context,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerWriteReactor<v1::ExportSessionResponse>* ExportSession(
      grpc::CallbackServerContext* context, const v1::ExportSessionRequest* request) override;
  grpc::ServerReadReactor<v1::ImportSessionRequest>* ImportSession(
      grpc::CallbackServerContext* context, v1::Session* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* context,
                                        const v1::ForkSessionRequest* request,
                                        v1::Session* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  // The engine, or the status to answer with while the model loads.
  absl::StatusOr<Engine*> ReadyEngine() const;
  // As ReadyEngine, and UNAVAILABLE while draining: for calls that make new server-side state.
  absl::StatusOr<Engine*> AcceptingEngine(const char* what) const;

 private:
  absl::StatusOr<const Tokenizer*> ReadyTokenizer() const;

  const ServiceLimits limits_;
  const std::string model_name_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> accepting_{true};
  std::atomic<int> open_streams_{0};
  std::atomic<metrics::ServingMetrics*> metrics_{nullptr};
  TokenAuthenticator* auth_ = nullptr;
  bool principal_from_certificate_ = false;
  std::mutex streams_mu_;
  absl::flat_hash_map<std::string, int> streams_per_principal_;  // guarded by streams_mu_
  WorkerPool response_writers_;
};

}  // namespace mambaserve
