#include "server/service.h"

#include "absl/strings/str_cat.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"
#include "server/auth.h"
#include "server/generate_reactor.h"
#include "server/session_transfer.h"
#include "server/tls.h"

namespace mambaserve {
namespace {

// Finishes a unary call with `status`, or with OK after `fill` when there is a value.
template <typename T, typename Fill>
void FinishWith(grpc::ServerUnaryReactor* reactor, absl::StatusOr<T> result, Fill fill) {
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
    return;
  }
  fill(*std::move(result));
  reactor->Finish(grpc::Status::OK);
}

grpc::ServerUnaryReactor* Finished(grpc::CallbackServerContext* context,
                                   const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

MambaServeService::MambaServeService(ServiceLimits limits, std::string model_name,
                                     int response_writer_threads)
    : limits_(limits),
      model_name_(std::move(model_name)),
      response_writers_(response_writer_threads) {}

bool MambaServeService::OpenPrincipalStream(const std::string& principal) {
  if (principal.empty() || limits_.max_streams_per_principal <= 0) return true;
  std::lock_guard<std::mutex> lock(streams_mu_);
  int& open = streams_per_principal_[principal];
  if (open >= limits_.max_streams_per_principal) return false;
  ++open;
  return true;
}

void MambaServeService::ClosePrincipalStream(const std::string& principal) {
  if (principal.empty() || limits_.max_streams_per_principal <= 0) return;
  std::lock_guard<std::mutex> lock(streams_mu_);
  if (--streams_per_principal_[principal] <= 0) streams_per_principal_.erase(principal);
}

absl::StatusOr<Caller> MambaServeService::Authenticate(
    const grpc::CallbackServerContext& context) const {
  if (auth_ == nullptr) {
    if (!principal_from_certificate_) return Caller{};
    std::shared_ptr<const grpc::AuthContext> auth_context = context.auth_context();
    ASSIGN_OR_RETURN(std::string principal, CertificatePrincipal(*auth_context));
    return Caller{std::move(principal)};
  }
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  const absl::string_view header = it == metadata.end()
                                       ? absl::string_view()
                                       : absl::string_view(it->second.data(), it->second.size());
  ASSIGN_OR_RETURN(std::string principal, auth_->Authenticate(header));
  return Caller{std::move(principal)};
}

absl::StatusOr<std::string> MambaServeService::CallerSessionId(
    const grpc::CallbackServerContext& context, const Caller& caller,
    const std::string& field) const {
  ASSIGN_OR_RETURN(std::string id, RequestSessionId(context, field));
  return id.empty() ? id : caller.Scoped(id);
}

absl::StatusOr<Engine*> MambaServeService::ReadyEngine() const {
  Engine* engine = this->engine();
  if (engine == nullptr) return absl::UnavailableError("the model is still loading; retry shortly");
  return engine;
}

absl::StatusOr<Engine*> MambaServeService::AcceptingEngine(const char* what) const {
  if (!accepting()) {
    // A session made now would live on a replica that is about to go away.
    return absl::UnavailableError(
        absl::StrCat("the server is shutting down; ", what, " on another replica"));
  }
  return ReadyEngine();
}

absl::StatusOr<const Tokenizer*> MambaServeService::ReadyTokenizer() const {
  ASSIGN_OR_RETURN(Engine * engine, ReadyEngine());
  if (engine->tokenizer() == nullptr) {
    return absl::FailedPreconditionError("this model has no tokenizer.json");
  }
  return engine->tokenizer();
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* MambaServeService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return StartGenerate(this, context, request);
}

grpc::ServerUnaryReactor* MambaServeService::CreateSession(grpc::CallbackServerContext* context,
                                                           const v1::CreateSessionRequest* request,
                                                           v1::Session* response) {
  absl::StatusOr<Caller> caller = Authenticate(*context);
  if (!caller.ok()) return Finished(context, caller.status());
  absl::StatusOr<Engine*> engine = AcceptingEngine("create the session");
  if (!engine.ok()) return Finished(context, engine.status());
  absl::StatusOr<std::string> id = CallerSessionId(*context, *caller, request->session_id());
  if (!id.ok()) return Finished(context, id.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // An empty name, or the caller's scope alone, gets a random name in that scope.
  (*engine)->CreateSession(id->empty() ? caller->scope() : *id,
                           [reactor, response, caller = *caller](absl::StatusOr<SessionInfo> info) {
                             if (info.ok()) LogInfo("CreateSession session=", info->id);
                             FinishWith(reactor, std::move(info), [&](const SessionInfo& i) {
                               ToProto(caller.Unscoped(i), response);
                             });
                           });
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::ForkSession(grpc::CallbackServerContext* context,
                                                         const v1::ForkSessionRequest* request,
                                                         v1::Session* response) {
  absl::StatusOr<Caller> caller = Authenticate(*context);
  if (!caller.ok()) return Finished(context, caller.status());
  absl::StatusOr<Engine*> engine = AcceptingEngine("fork the session");
  if (!engine.ok()) return Finished(context, engine.status());
  // x-session-id names the source: it routes the call to the replica holding the source's state.
  absl::StatusOr<std::string> source =
      CallerSessionId(*context, *caller, request->source_session_id());
  if (!source.ok()) return Finished(context, source.status());
  if (source->empty()) {
    return Finished(context, absl::InvalidArgumentError("source_session_id is empty"));
  }
  if (!request->session_id().empty()) {
    if (absl::Status valid = SessionManager::ValidateSessionId(request->session_id()); !valid.ok())
      return Finished(context, valid);
  }
  const std::string id = caller->Scoped(request->session_id());  // the scope alone: a random name
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (*engine)->ForkSession(
      *source, id,
      [reactor, response, caller = *caller, source = *source](absl::StatusOr<SessionInfo> info) {
        if (info.ok()) LogInfo("ForkSession source=", source, " session=", info->id);
        FinishWith(reactor, std::move(info),
                   [&](const SessionInfo& i) { ToProto(caller.Unscoped(i), response); });
      });
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::GetSession(grpc::CallbackServerContext* context,
                                                        const v1::GetSessionRequest* request,
                                                        v1::Session* response) {
  absl::StatusOr<Caller> caller = Authenticate(*context);
  if (!caller.ok()) return Finished(context, caller.status());
  absl::StatusOr<Engine*> engine = ReadyEngine();
  if (!engine.ok()) return Finished(context, engine.status());
  absl::StatusOr<std::string> id = CallerSessionId(*context, *caller, request->session_id());
  if (!id.ok()) return Finished(context, id.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (*engine)->GetSession(
      *id, [reactor, response, caller = *caller](absl::StatusOr<SessionInfo> info) {
        FinishWith(reactor, std::move(info),
                   [&](const SessionInfo& i) { ToProto(caller.Unscoped(i), response); });
      });
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::ListSessions(grpc::CallbackServerContext* context,
                                                          const v1::ListSessionsRequest* request,
                                                          v1::ListSessionsResponse* response) {
  absl::StatusOr<Caller> caller = Authenticate(*context);
  if (!caller.ok()) return Finished(context, caller.status());
  absl::StatusOr<Engine*> engine = ReadyEngine();
  if (!engine.ok()) return Finished(context, engine.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (*engine)->ListSessions(caller->scope(), [reactor, response, caller = *caller](
                                               absl::StatusOr<std::vector<SessionInfo>> list) {
    FinishWith(reactor, std::move(list), [&](const std::vector<SessionInfo>& sessions) {
      for (const SessionInfo& info : sessions) {
        ToProto(caller.Unscoped(info), response->add_sessions());
      }
    });
  });
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::DeleteSession(grpc::CallbackServerContext* context,
                                                           const v1::DeleteSessionRequest* request,
                                                           v1::DeleteSessionResponse* response) {
  absl::StatusOr<Caller> caller = Authenticate(*context);
  if (!caller.ok()) return Finished(context, caller.status());
  absl::StatusOr<Engine*> engine = ReadyEngine();
  if (!engine.ok()) return Finished(context, engine.status());
  absl::StatusOr<std::string> id = CallerSessionId(*context, *caller, request->session_id());
  if (!id.ok()) return Finished(context, id.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (*engine)->DeleteSession(*id, [reactor, id = *id](absl::Status s) {
    if (s.ok()) LogInfo("DeleteSession session=", id);
    reactor->Finish(ToGrpcStatus(s));
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::ExportSessionResponse>* MambaServeService::ExportSession(
    grpc::CallbackServerContext* context, const v1::ExportSessionRequest* request) {
  return StartExportSession(this, context, request);
}

grpc::ServerReadReactor<v1::ImportSessionRequest>* MambaServeService::ImportSession(
    grpc::CallbackServerContext* context, v1::Session* response) {
  return StartImportSession(this, context, response);
}

grpc::ServerUnaryReactor* MambaServeService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  if (absl::StatusOr<Caller> caller = Authenticate(*context); !caller.ok()) {
    return Finished(context, caller.status());
  }
  absl::StatusOr<const Tokenizer*> tokenizer = ReadyTokenizer();
  if (!tokenizer.ok()) return Finished(context, tokenizer.status());
  // Same bound as a Generate prompt: encoding runs on a gRPC thread and the reply grows with it.
  const size_t max_bytes = static_cast<size_t>(limits_.max_prompt_tokens) * 64;
  if (request->text().size() > max_bytes) {
    return Finished(context, absl::InvalidArgumentError(
                                 absl::StrCat("text is ", request->text().size(),
                                              " bytes; at most ", max_bytes, " are accepted")));
  }
  auto ids = (*tokenizer)->Encode(request->text());
  if (!ids.ok()) {
    return Finished(context,
                    absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_tokens((*tokenizer)->TokenString(id).value_or(""));
  }
  return Finished(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* MambaServeService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  if (absl::StatusOr<Caller> caller = Authenticate(*context); !caller.ok()) {
    return Finished(context, caller.status());
  }
  absl::StatusOr<const Tokenizer*> tokenizer = ReadyTokenizer();
  if (!tokenizer.ok()) return Finished(context, tokenizer.status());
  // Decoding runs on a gRPC thread and the reply grows with the ids: bounded like Tokenize.
  if (request->token_ids_size() > limits_.max_detokenize_ids) {
    return Finished(context, absl::InvalidArgumentError(absl::StrCat(
                                 "token_ids has ", request->token_ids_size(), " ids; at most ",
                                 limits_.max_detokenize_ids, " are accepted per call")));
  }
  const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  auto text = (*tokenizer)->Decode(ids);
  if (!text.ok()) {
    return Finished(
        context, absl::InvalidArgumentError(absl::StrCat("token_ids: ", text.status().message())));
  }
  response->set_text(*text);
  return Finished(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* MambaServeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest* request,
                                                          v1::ModelInfo* response) {
  if (absl::StatusOr<Caller> caller = Authenticate(*context); !caller.ok()) {
    return Finished(context, caller.status());
  }
  absl::StatusOr<Engine*> ready = ReadyEngine();
  if (!ready.ok()) return Finished(context, ready.status());
  const EngineInfo& info = (*ready)->info();
  const ModelConfig& c = info.config;
  response->set_architecture(ModelTypeName(c.model_type));
  response->set_model_name(model_name_);
  response->set_fingerprint(info.fingerprint);
  response->set_d_model(c.d_model);
  response->set_n_layers(c.n_layers);
  response->set_d_inner(c.d_inner);
  response->set_d_state(c.d_state);
  response->set_d_conv(c.d_conv);
  response->set_dt_rank(c.dt_rank);
  response->set_vocab_size(c.vocab_size);
  response->set_tokenizer_vocab_size(info.tokenizer_vocab_size);
  response->set_dtype(DTypeName(info.backend.weight_dtype));
  response->set_backend(info.backend.name);
  response->set_device(info.backend.device);
  response->set_state_bytes_per_session(info.backend.state_bytes_per_slot);
  response->set_slot_capacity(info.backend.num_slots);
  response->set_max_batch(info.max_batch);
  response->set_max_queue(info.max_queue);
  response->set_max_prompt_tokens(limits_.max_prompt_tokens);
  response->set_eos_token_id(c.eos_token_id);
  const SchedulerStats stats = (*ready)->stats().Snapshot();
  response->set_running(stats.running);
  response->set_waiting(stats.waiting);
  response->set_slots_in_use(stats.slots_in_use);
  response->set_sessions(stats.sessions);
  response->set_sessions_parked(stats.sessions_parked);
  return Finished(context, absl::OkStatus());
}

}  // namespace mambaserve
