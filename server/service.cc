#include "server/service.h"

#include <chrono>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/session_blob.h"
#include "engine/status_macros.h"
#include "engine/tokenizer/utf8.h"
#include "server/log.h"
#include "server/serving_metrics_adapter.h"

namespace mambaserve {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kSessionHeader[] = "x-session-id";

const grpc::Status kNotReady(grpc::StatusCode::UNAVAILABLE, "the model is still loading; retry shortly");

v1::StateLocation ToProto(StateLocation location) {
  switch (location) {
    case StateLocation::kNone: return v1::STATE_LOCATION_NONE;
    case StateLocation::kDevice: return v1::STATE_LOCATION_DEVICE;
    case StateLocation::kHost: return v1::STATE_LOCATION_HOST;
  }
  return v1::STATE_LOCATION_UNSPECIFIED;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const SessionInfo& info, v1::Session* out) {
  out->set_session_id(info.id);
  out->set_length_tokens(info.length);
  out->set_created_unix_ms(info.created_unix_ms);
  out->set_last_used_unix_ms(info.last_used_unix_ms);
  out->set_state_bytes(info.state_bytes);
  out->set_location(ToProto(info.location));
  out->set_busy(info.busy);
}

// The session a request names: its field or the x-session-id header; both must agree.
absl::StatusOr<std::string> RequestSessionId(const grpc::CallbackServerContext& context, const std::string& field) {
  std::string id = field;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find(kSessionHeader); it != metadata.end()) {
    const std::string header(it->second.data(), it->second.size());
    if (!id.empty() && id != header) {
      return absl::InvalidArgumentError(absl::StrCat("session_id \"", id, "\" and x-session-id metadata \"", header,
                                                     "\" disagree; send one, or the same id in both"));
    }
    id = header;
  }
  if (!id.empty()) RETURN_IF_ERROR(SessionManager::ValidateSessionId(id));
  return id;
}

absl::StatusOr<SamplingParams> ToSamplingParams(const v1::SamplingParams& p, int default_max_tokens) {
  SamplingParams s;
  s.max_tokens = p.has_max_tokens() ? p.max_tokens() : default_max_tokens;
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  if (p.has_seed()) s.seed = p.seed();
  for (int i = 0; i < p.stop_size(); ++i) {
    if (absl::Status utf8 = ValidateUtf8(p.stop(i)); !utf8.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "]: ", utf8.message()));
    }
    s.stop.push_back(p.stop(i));
  }
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.ignore_eos = p.ignore_eos();
  s.logprobs = p.logprobs();
  return s;
}

// Streams one generation: events from the scheduler become responses, one write at a time.
class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateReactor(MambaServeService* service, grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw)
      : service_(service), context_(context), started_(Clock::now()) {
    service_->AddOpenStream(1);
    grpc::ByteBuffer bytes(*raw);
    auto request = std::make_unique<v1::GenerateRequest>();
    if (!grpc::SerializationTraits<v1::GenerateRequest>::Deserialize(&bytes, request.get()).ok()) {
      status_ = absl::InvalidArgumentError(
          "the request could not be parsed: a string field (text, session_id, stop) is not valid UTF-8, or the "
          "message is not a mambaserve.v1.GenerateRequest");
      Finish(ToGrpcStatus(status_));
      return;
    }
    metrics::ServingMetrics* metrics = service->metrics();
    ServingEngine* engine = service->engine();
    if (engine == nullptr) {
      Finish(kNotReady);
      return;
    }
    if (!service->accepting()) {
      if (metrics != nullptr) metrics->RequestRejected("shutting_down");
      status_ = absl::UnavailableError("the server is shutting down; retry on another replica");
      Finish(ToGrpcStatus(status_));
      return;
    }
    tokenizer_ = engine->tokenizer.get();
    absl::StatusOr<GenerationRequest> built = Build(*engine, *request);
    request.reset();
    if (!built.ok()) {
      if (metrics != nullptr) metrics->RequestRejected("invalid_request");
      status_ = built.status();
      Finish(ToGrpcStatus(status_));
      return;
    }
    const int64_t prompt_tokens = static_cast<int64_t>(built->prompt.size());
    stream_ = built->stream;
    // The timer exists before the listener can run; MaybeWrite uses it under mu_.
    if (metrics != nullptr) timer_.emplace(metrics, prompt_tokens);
    stream_->SetListener([this] { MaybeWrite(); });
    absl::Status submitted = engine->scheduler->Submit(*std::move(built));
    if (!submitted.ok()) {
      stream_->SetListener(nullptr);
      stream_.reset();
      if (metrics != nullptr) {
        timer_.reset();  // never admitted: not a finished request
        metrics->RequestRejected(absl::IsResourceExhausted(submitted) ? "queue_full" : "shutting_down");
      }
      status_ = submitted;
      Finish(ToGrpcStatus(status_));
    } else if (metrics != nullptr) {
      metrics->RequestAdmitted();
    }
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) broken_ = true;
    }
    if (!ok) stream_->Cancel();
    MaybeWrite();
  }

  void OnCancel() override {
    if (stream_) stream_->Cancel();
  }

  void OnDone() override {
    if (stream_) {
      stream_->SetListener(nullptr);  // waits for a running listener call
      stream_->Cancel();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    LogInfo("Generate peer=", context_->peer(), " session=", session_.empty() ? "-" : session_,
            " prompt_tokens=", usage_.prompt_tokens, " generated=", usage_.generated_tokens,
            " finish=", FinishReasonName(finish_), " ttft_ms=",
            usage_.time_to_first_token_s < 0 ? -1 : static_cast<int64_t>(usage_.time_to_first_token_s * 1000),
            " duration_ms=", static_cast<int64_t>(seconds * 1000), " status=",
            status_.ok() ? "OK" : absl::StatusCodeToString(status_.code()),
            status_.ok() ? "" : absl::StrCat(" (", status_.message(), ")"));
    MambaServeService* service = service_;
    delete this;
    service->AddOpenStream(-1);
  }

 private:
  absl::StatusOr<GenerationRequest> Build(const ServingEngine& engine, const v1::GenerateRequest& request) {
    const ServiceLimits& limits = service_->limits();
    GenerationRequest out;
    ASSIGN_OR_RETURN(out.session_id, RequestSessionId(*context_, request.session_id()));
    session_ = out.session_id;
    const int64_t vocab = engine.model->config.vocab_size;
    switch (request.prompt_case()) {
      case v1::GenerateRequest::kText: {
        if (request.text().empty()) return absl::InvalidArgumentError("prompt is empty: set text or tokens");
        if (tokenizer_ == nullptr) {
          return absl::FailedPreconditionError(
              "this model has no tokenizer.json, so text prompts are not supported; send tokens instead");
        }
        if (request.text().size() > static_cast<size_t>(limits.max_prompt_tokens) * 64) {
          return absl::InvalidArgumentError(absl::StrCat("prompt text is ", request.text().size(),
                                                         " bytes; far over the limit of ", limits.max_prompt_tokens,
                                                         " tokens (--max-prompt-tokens)"));
        }
        auto ids = tokenizer_->Encode(request.text());
        if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("prompt text: ", ids.status().message()));
        out.prompt = *std::move(ids);
        if (out.prompt.empty()) return absl::InvalidArgumentError("prompt text encodes to no tokens");
        // A tokenizer.json may define more tokens (added ones) than the model has embedding rows.
        for (int32_t id : out.prompt) {
          if (id >= vocab) {
            return absl::InvalidArgumentError(absl::StrCat("prompt text encodes to token id ", id,
                                                           ", which this model does not have (vocab ", vocab, ")"));
          }
        }
        break;
      }
      case v1::GenerateRequest::kTokens: {
        if (request.tokens().ids().empty()) return absl::InvalidArgumentError("prompt is empty: tokens.ids has no ids");
        for (int i = 0; i < request.tokens().ids_size(); ++i) {
          const int32_t id = request.tokens().ids(i);
          if (id < 0 || id >= vocab) {
            return absl::InvalidArgumentError(absl::StrCat("tokens.ids[", i, "] = ", id,
                                                           " is not a token id: must be in [0, ", vocab, ")"));
          }
        }
        out.prompt.assign(request.tokens().ids().begin(), request.tokens().ids().end());
        break;
      }
      default:
        return absl::InvalidArgumentError("prompt is empty: set text or tokens");
    }
    if (static_cast<int64_t>(out.prompt.size()) > limits.max_prompt_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("prompt has ", out.prompt.size(),
                                                     " tokens; this server accepts at most ", limits.max_prompt_tokens,
                                                     " (--max-prompt-tokens): shorten it or split it over session turns"));
    }
    ASSIGN_OR_RETURN(out.sampling, ToSamplingParams(request.sampling(), limits.default_max_tokens));
    RETURN_IF_ERROR(ValidateSamplingParams(out.sampling, vocab, limits.sampling));
    if (!out.sampling.stop.empty() && tokenizer_ == nullptr) {
      return absl::FailedPreconditionError("stop strings need a tokenizer; this model has none (use stop_token_ids)");
    }
    const auto deadline = context_->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      out.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
    }
    out.stream = std::make_shared<GenerationStream>(limits.stream_buffer);
    return out;
  }

  // Serializes the response for `event` into buffer_.
  void Fill(const GenerationEvent& event) {
    response_.Clear();
    response_.set_text(event.text);
    for (int32_t id : event.token_ids) response_.add_token_ids(id);
    for (const SampledToken& sampled : event.logprobs) {
      v1::TokenLogprobs* lp = response_.add_logprobs();
      lp->set_token_id(sampled.token);
      lp->set_logprob(sampled.logprob);
      for (const TokenLogprob& alt : sampled.top) {
        v1::TokenLogprob* top = lp->add_top();
        top->set_token_id(alt.token);
        top->set_logprob(alt.logprob);
        if (tokenizer_ != nullptr) {
          if (auto s = tokenizer_->TokenString(alt.token)) top->set_token(*s);
        }
      }
    }
    if (event.final) {
      response_.set_finish_reason(ToProto(event.finish_reason));
      v1::Usage* usage = response_.mutable_usage();
      usage->set_prompt_tokens(event.usage.prompt_tokens);
      usage->set_generated_tokens(event.usage.generated_tokens);
      usage->set_session_length(event.usage.session_length);
      usage->set_time_to_first_token_s(event.usage.time_to_first_token_s);
    }
    bool own = false;
    buffer_.Clear();
    grpc::SerializationTraits<v1::GenerateResponse>::Serialize(response_, &buffer_, &own);
  }

  // Starts the next write if none is in flight. Called by the scheduler (listener) and OnWriteDone;
  // takes the lock only to claim the single write slot, never while calling into gRPC.
  void MaybeWrite() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (writing_ || finished_) return;
      std::optional<GenerationEvent> event = stream_->Pop();
      if (!event) return;
      if (timer_) RecordMetrics(*event);
      if (!event->final) {
        if (broken_) continue;  // the client is gone: drop until the final event
        Fill(*event);
        writing_ = true;
        lock.unlock();
        StartWrite(&buffer_);
        return;
      }
      finished_ = true;
      usage_ = event->usage;
      finish_ = event->finish_reason;
      status_ = event->status;
      lock.unlock();
      if (!status_.ok() || broken_) {
        Finish(broken_ && status_.ok() ? grpc::Status::CANCELLED : ToGrpcStatus(status_));
      } else {
        Fill(*event);
        StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
      }
      return;
    }
  }

  // Token timings are taken when the reactor hands events to gRPC (what the client sees).
  void RecordMetrics(const GenerationEvent& event) {
    // A final event may carry the last tokens too.
    if (!event.token_ids.empty()) timer_->Tokens(static_cast<int64_t>(event.token_ids.size()));
    if (!event.final) return;
    timer_->ScheduledAfter(event.usage.queue_time_s);
    timer_->Finish(MetricsFinishReason(event.finish_reason, !event.status.ok()));
  }

  MambaServeService* service_;
  grpc::CallbackServerContext* context_;
  std::optional<metrics::RequestTimer> timer_;  // guarded by mu_ once the listener is set
  const Tokenizer* tokenizer_ = nullptr;
  const Clock::time_point started_;
  std::shared_ptr<GenerationStream> stream_;
  std::string session_;

  std::mutex mu_;
  bool writing_ = false;
  bool finished_ = false;
  bool broken_ = false;
  v1::GenerateResponse response_;
  grpc::ByteBuffer buffer_;
  // For the log line; written once before Finish.
  GenerationUsage usage_;
  FinishReason finish_ = FinishReason::kNone;
  absl::Status status_;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* MambaServeService::Generate(grpc::CallbackServerContext* context,
                                                                        const grpc::ByteBuffer* request) {
  return new GenerateReactor(this, context, request);
}

grpc::ServerUnaryReactor* MambaServeService::OnSchedulerThread(grpc::CallbackServerContext* context,
                                                               std::function<absl::Status(SessionManager&)> task) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServingEngine* engine = this->engine();
  if (engine == nullptr) {
    reactor->Finish(kNotReady);
    return reactor;
  }
  absl::Status queued = engine->scheduler->RunOnSchedulerThread(
      [reactor, task = std::move(task)](SessionManager& sessions) { reactor->Finish(ToGrpcStatus(task(sessions))); });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::CreateSession(grpc::CallbackServerContext* context,
                                                           const v1::CreateSessionRequest* request,
                                                           v1::Session* response) {
  return OnSchedulerThread(context, [request, response](SessionManager& sessions) -> absl::Status {
    ASSIGN_OR_RETURN(SessionInfo info, sessions.Create(request->session_id()));
    ToProto(info, response);
    LogInfo("CreateSession session=", info.id);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MambaServeService::GetSession(grpc::CallbackServerContext* context,
                                                        const v1::GetSessionRequest* request, v1::Session* response) {
  return OnSchedulerThread(context, [request, response](SessionManager& sessions) -> absl::Status {
    ASSIGN_OR_RETURN(SessionInfo info, sessions.Get(request->session_id()));
    ToProto(info, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MambaServeService::ListSessions(grpc::CallbackServerContext* context,
                                                          const v1::ListSessionsRequest* request,
                                                          v1::ListSessionsResponse* response) {
  return OnSchedulerThread(context, [response](SessionManager& sessions) -> absl::Status {
    for (const SessionInfo& info : sessions.List()) ToProto(info, response->add_sessions());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MambaServeService::DeleteSession(grpc::CallbackServerContext* context,
                                                           const v1::DeleteSessionRequest* request,
                                                           v1::DeleteSessionResponse* response) {
  return OnSchedulerThread(context, [request](SessionManager& sessions) -> absl::Status {
    RETURN_IF_ERROR(sessions.Delete(request->session_id()));
    LogInfo("DeleteSession session=", request->session_id());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MambaServeService::ExportSession(grpc::CallbackServerContext* context,
                                                           const v1::ExportSessionRequest* request,
                                                           v1::ExportSessionResponse* response) {
  const std::string fingerprint = engine() != nullptr ? engine()->model->fingerprint : "";
  return OnSchedulerThread(context, [request, response, fingerprint](SessionManager& sessions) -> absl::Status {
    ASSIGN_OR_RETURN(std::string blob, sessions.Export(request->session_id()));
    response->set_blob(std::move(blob));
    response->set_model_fingerprint(fingerprint);
    response->set_format_version(kSessionBlobVersion);
    LogInfo("ExportSession session=", request->session_id(), " bytes=", response->blob().size());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MambaServeService::ImportSession(grpc::CallbackServerContext* context,
                                                           const v1::ImportSessionRequest* request,
                                                           v1::Session* response) {
  return OnSchedulerThread(context, [request, response](SessionManager& sessions) -> absl::Status {
    const std::string& blob = request->blob();
    ASSIGN_OR_RETURN(SessionInfo info,
                     sessions.Import(request->session_id(),
                                     {reinterpret_cast<const uint8_t*>(blob.data()), blob.size()}));
    ToProto(info, response);
    LogInfo("ImportSession session=", info.id, " length=", info.length);
    return absl::OkStatus();
  });
}

// The tokenizer of a loaded model, or the status to answer with.
absl::StatusOr<const Tokenizer*> MambaServeService::ReadyTokenizer() const {
  ServingEngine* engine = this->engine();
  if (engine == nullptr) return absl::UnavailableError("the model is still loading; retry shortly");
  if (engine->tokenizer == nullptr) return absl::FailedPreconditionError("this model has no tokenizer.json");
  return engine->tokenizer.get();
}

grpc::ServerUnaryReactor* MambaServeService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<const Tokenizer*> tokenizer = ReadyTokenizer();
  // Same bound as a Generate prompt: encoding runs on a gRPC thread and the reply grows with it.
  const size_t max_bytes = static_cast<size_t>(limits_.max_prompt_tokens) * 64;
  if (tokenizer.ok() && request->text().size() > max_bytes) {
    tokenizer = absl::InvalidArgumentError(absl::StrCat("text is ", request->text().size(), " bytes; at most ",
                                                        max_bytes, " are accepted"));
  }
  if (!tokenizer.ok()) {
    reactor->Finish(ToGrpcStatus(tokenizer.status()));
    return reactor;
  }
  auto ids = (*tokenizer)->Encode(request->text());
  if (!ids.ok()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()))));
    return reactor;
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_tokens((*tokenizer)->TokenString(id).value_or(""));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<const Tokenizer*> tokenizer = ReadyTokenizer();
  if (!tokenizer.ok()) {
    reactor->Finish(ToGrpcStatus(tokenizer.status()));
    return reactor;
  }
  const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  auto text = (*tokenizer)->Decode(ids);
  if (!text.ok()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("token_ids: ", text.status().message()))));
    return reactor;
  }
  response->set_text(*text);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* MambaServeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest* request,
                                                          v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServingEngine* engine = this->engine();
  if (engine == nullptr) {
    reactor->Finish(kNotReady);
    return reactor;
  }
  const ModelConfig& c = engine->model->config;
  response->set_architecture(ModelTypeName(c.model_type));
  response->set_model_dir(engine->model_dir);
  response->set_fingerprint(engine->model->fingerprint);
  response->set_d_model(c.d_model);
  response->set_n_layers(c.n_layers);
  response->set_d_inner(c.d_inner);
  response->set_d_state(c.d_state);
  response->set_d_conv(c.d_conv);
  response->set_dt_rank(c.dt_rank);
  response->set_vocab_size(c.vocab_size);
  response->set_tokenizer_vocab_size(engine->tokenizer ? engine->tokenizer->vocab_size() : 0);
  response->set_dtype(DTypeName(engine->backend_info.weight_dtype));
  response->set_backend(engine->backend_info.name);
  response->set_device(engine->backend_info.device);
  response->set_state_bytes_per_session(engine->backend_info.state_bytes_per_slot);
  response->set_slot_capacity(engine->backend_info.num_slots);
  response->set_max_batch(engine->scheduler->options().max_batch);
  response->set_max_queue(engine->scheduler->options().max_queue);
  response->set_max_prompt_tokens(limits_.max_prompt_tokens);
  response->set_eos_token_id(c.eos_token_id);
  const SchedulerStats stats = engine->scheduler->stats().Snapshot();
  response->set_running(stats.running);
  response->set_waiting(stats.waiting);
  response->set_slots_in_use(stats.slots_in_use);
  response->set_sessions(stats.sessions);
  response->set_sessions_parked(stats.sessions_parked);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace mambaserve
