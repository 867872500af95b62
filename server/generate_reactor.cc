#include "server/generate_reactor.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/log.h"
#include "engine/serving/session_manager.h"
#include "server/proto_convert.h"
#include "server/service.h"
#include "server/serving_metrics_adapter.h"

namespace mambaserve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kRequestIdHeader[] = "x-request-id";

// The client's x-request-id when it is a plausible id (at most 64 characters a session id may
// hold, [A-Za-z0-9._:-]), else a fresh random one: what ties a stream's log line to the client's
// own logs.
std::string RequestId(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find(kRequestIdHeader); it != metadata.end()) {
    std::string id(it->second.data(), it->second.size());
    if (id.size() <= 64 && SessionManager::ValidateSessionId(id).ok()) return id;
  }
  std::random_device random;
  return absl::StrCat(absl::Hex(random(), absl::kZeroPad8), absl::Hex(random(), absl::kZeroPad8));
}

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateReactor(MambaServeService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), started_(Clock::now()) {
    service_->AddOpenStream(1);
    // Sent with the first response (or the refusal), so the client can quote it.
    context_->AddInitialMetadata(kRequestIdHeader, request_id_);
  }

  void Start(const grpc::ByteBuffer& raw);
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  absl::StatusOr<GenerationRequest> Parse(const grpc::ByteBuffer& raw, const Engine& engine);
  void Refuse(absl::Status status, const char* metrics_reason);
  void OnEventsReady();  // the scheduler thread: claim the writer and hand the work on
  void WriteNext();      // the claim holder: write the next event, or finish
  void Serialize(const GenerationEvent& event);
  void RecordMetrics(const GenerationEvent& event);

  MambaServeService* const service_;
  grpc::CallbackServerContext* const context_;
  const Clock::time_point started_;
  const std::string request_id_ = RequestId(*context_);
  const Tokenizer* tokenizer_ = nullptr;
  Caller caller_;
  bool holds_stream_quota_ = false;  // set once in Start, before any other thread sees the reactor
  std::shared_ptr<GenerationStream> stream_;
  std::string session_;

  std::mutex mu_;
  bool writing_ = false;   // guarded by mu_: the write claim
  bool finished_ = false;  // guarded by mu_: Finish was called
  // Held across StartWrite and taken first in OnWriteDone, so that all a claim holder did,
  // gRPC's own bookkeeping inside StartWrite included, happens before the next holder runs. gRPC
  // orders StartWrite before OnWriteDone too, but inside a library ThreadSanitizer cannot see
  // into. Recursive in case gRPC runs OnWriteDone inline, on the thread still in StartWrite.
  std::recursive_mutex start_write_mu_;

  // The claim holder's.
  std::optional<metrics::RequestTimer> timer_;
  bool broken_ = false;  // a write failed: the client is gone
  v1::GenerateResponse response_;
  grpc::ByteBuffer buffer_;
  // For the log line; set before Finish.
  GenerationUsage usage_;
  FinishReason finish_ = FinishReason::kNone;
  absl::Status status_;
  // With --log-prompts only: set in Start, appended to by the claim holder.
  std::string logged_prompt_, logged_completion_;
};

// A quoted, escaped excerpt of untrusted text for a log line (one line, bounded).
std::string LogQuote(absl::string_view text) {
  constexpr size_t kMaxBytes = 4096;
  std::string out = absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxBytes)), "\"");
  if (text.size() > kMaxBytes) absl::StrAppend(&out, "+", text.size() - kMaxBytes, "B");
  return out;
}

std::string LogPrompt(const v1::GenerateRequest& request) {
  if (request.prompt_case() != v1::GenerateRequest::kTokens) return LogQuote(request.text());
  return absl::StrCat("[", absl::StrJoin(request.tokens().ids(), ","), "]");
}

absl::StatusOr<GenerationRequest> GenerateReactor::Parse(const grpc::ByteBuffer& raw,
                                                         const Engine& engine) {
  grpc::ByteBuffer bytes(raw);
  v1::GenerateRequest request;
  if (!grpc::SerializationTraits<v1::GenerateRequest>::Deserialize(&bytes, &request).ok()) {
    return absl::InvalidArgumentError(
        "the request could not be parsed: a string field (text, session_id, stop) is not valid "
        "UTF-8, or the message is not a mambaserve.v1.GenerateRequest");
  }
  absl::StatusOr<std::string> session =
      service_->CallerSessionId(*context_, caller_, request.session_id());
  if (!session.ok()) return session.status();
  session_ = *session;
  if (service_->limits().log_prompts) logged_prompt_ = LogPrompt(request);
  absl::StatusOr<GenerationRequest> out =
      ToGenerationRequest(request, std::move(*session), engine, service_->limits());
  if (!out.ok()) return out.status();
  const auto deadline = context_->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    out->deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       deadline - std::chrono::system_clock::now());
  }
  out->stream = std::make_shared<GenerationStream>(service_->limits().stream_buffer);
  return out;
}

void GenerateReactor::Start(const grpc::ByteBuffer& raw) {
  Engine* engine = service_->engine();
  if (engine == nullptr) {
    Refuse(absl::UnavailableError("the model is still loading; retry shortly"), nullptr);
    return;
  }
  if (!service_->accepting()) {
    Refuse(absl::UnavailableError("the server is shutting down; retry on another replica"),
           "shutting_down");
    return;
  }
  absl::StatusOr<Caller> caller = service_->Authenticate(*context_);
  if (!caller.ok()) {
    Refuse(caller.status(), "unauthenticated");
    return;
  }
  caller_ = *std::move(caller);
  if (!service_->OpenPrincipalStream(caller_.principal)) {
    Refuse(absl::ResourceExhaustedError(absl::StrCat(
               "you have ", service_->limits().max_streams_per_principal,
               " streams open, the most one principal may (--max-streams-per-principal); retry "
               "when one ends")),
           "principal_quota");
    return;
  }
  holds_stream_quota_ = true;
  tokenizer_ = engine->tokenizer();
  absl::StatusOr<GenerationRequest> request = Parse(raw, *engine);
  if (!request.ok()) {
    Refuse(request.status(), "invalid_request");
    return;
  }
  stream_ = request->stream;
  metrics::ServingMetrics* metrics = service_->metrics();
  // The timer exists before the listener can run; the claim holder uses it from then on.
  if (metrics != nullptr) timer_.emplace(metrics, static_cast<int64_t>(request->prompt.size()));
  stream_->SetListener([this] { OnEventsReady(); });
  absl::Status submitted = engine->Submit(*std::move(request));
  if (!submitted.ok()) {
    stream_->SetListener(nullptr);
    stream_.reset();
    if (timer_) timer_->Discard();  // never admitted: not a finished request
    timer_.reset();
    const char* reason = absl::IsResourceExhausted(submitted)    ? "queue_full"
                         : absl::IsUnavailable(submitted)        ? "shutting_down"
                         : absl::IsFailedPrecondition(submitted) ? "session_busy"
                         : absl::IsNotFound(submitted)           ? "unknown_session"
                                                                 : "invalid_request";
    Refuse(submitted, reason);
  } else if (metrics != nullptr) {
    metrics->RequestAdmitted();
  }
}

void GenerateReactor::Refuse(absl::Status status, const char* metrics_reason) {
  if (metrics::ServingMetrics* m = service_->metrics(); m != nullptr && metrics_reason != nullptr) {
    m->RequestRejected(metrics_reason);
  }
  if (absl::IsResourceExhausted(status)) {
    // Full queue or quota: say when to come back, jittered so that refused clients do not return
    // in lockstep. grpc-retry-pushback-ms is what gRPC clients with a retry policy obey on their
    // own; retry-after-ms is the same figure for everyone else.
    thread_local std::minstd_rand jitter(std::random_device{}());
    const std::string after_ms = std::to_string(500 + jitter() % 1000);
    context_->AddTrailingMetadata("retry-after-ms", after_ms);
    context_->AddTrailingMetadata("grpc-retry-pushback-ms", after_ms);
  }
  status_ = std::move(status);
  Finish(ToGrpcStatus(status_));
}

void GenerateReactor::OnEventsReady() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || finished_) return;  // the holder will see the new event
    writing_ = true;
  }
  if (!service_->response_writers().Post([this] { WriteNext(); })) WriteNext();  // pool stopped
}

void GenerateReactor::OnWriteDone(bool ok) {
  { std::lock_guard<std::recursive_mutex> lock(start_write_mu_); }  // the previous holder's work
  if (!ok) {
    broken_ = true;
    stream_->Cancel();
  }
  WriteNext();  // a gRPC thread, holding the claim since StartWrite
}

void GenerateReactor::OnCancel() {
  if (stream_) stream_->Cancel();
}

void GenerateReactor::WriteNext() {
  for (;;) {
    std::optional<GenerationEvent> event = stream_->Pop();
    if (!event) {
      std::lock_guard<std::mutex> lock(mu_);
      // An event pushed after Pop saw the claim taken and left it to us: look again.
      if (stream_->HasEvents()) continue;
      writing_ = false;
      return;
    }
    if (timer_) RecordMetrics(*event);
    if (service_->limits().log_prompts) logged_completion_ += event->text;
    if (!event->final) {
      if (broken_) continue;  // the client is gone: drop until the final event
      Serialize(*event);
      std::lock_guard<std::recursive_mutex> lock(start_write_mu_);
      StartWrite(&buffer_);  // the claim passes to OnWriteDone
      return;
    }
    usage_ = event->usage;
    finish_ = event->finish_reason;
    status_ = event->status;
    {
      // Pairs with OnDone: all this holder did happens before the reactor is torn down.
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
    }
    // The claim is kept for good: nothing may touch the call after Finish but OnDone.
    if (!status_.ok() || broken_) {
      Finish(broken_ && status_.ok() ? grpc::Status::CANCELLED : ToGrpcStatus(status_));
    } else {
      Serialize(*event);
      StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
    }
    return;
  }
}

void GenerateReactor::Serialize(const GenerationEvent& event) {
  ToProto(event, tokenizer_, &response_);
  bool own = false;
  buffer_.Clear();
  grpc::SerializationTraits<v1::GenerateResponse>::Serialize(response_, &buffer_, &own);
}

// Token timings are taken when events are handed to gRPC (what the client sees).
void GenerateReactor::RecordMetrics(const GenerationEvent& event) {
  // A final event may carry the last tokens too.
  if (!event.token_ids.empty()) timer_->Tokens(static_cast<int64_t>(event.token_ids.size()));
  if (!event.final) return;
  timer_->ScheduledAfter(event.usage.queue_time_s);
  timer_->Finish(MetricsFinishReason(event.finish_reason, !event.status.ok()));
}

void GenerateReactor::OnDone() {
  std::shared_ptr<GenerationStream> stream;
  {
    // After the claim holder's last step (see WriteNext): its writes to the stream and the response
    // are ordered before they are released here.
    std::lock_guard<std::mutex> lock(mu_);
    stream = std::move(stream_);
  }
  if (stream) {
    stream->SetListener(nullptr);  // waits for a running listener call
    stream->Cancel();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
  LogInfo(
      "Generate request_id=", request_id_, " peer=", context_->peer(),
      " session=", session_.empty() ? "-" : session_, " prompt_tokens=", usage_.prompt_tokens,
      " generated=", usage_.generated_tokens, " finish=", FinishReasonName(finish_), " ttft_ms=",
      usage_.time_to_first_token_s < 0 ? -1
                                       : static_cast<int64_t>(usage_.time_to_first_token_s * 1000),
      " duration_ms=", static_cast<int64_t>(seconds * 1000),
      " status=", status_.ok() ? "OK" : absl::StatusCodeToString(status_.code()),
      status_.ok() ? "" : absl::StrCat(" (", status_.message(), ")"),
      logged_prompt_.empty()
          ? ""
          : absl::StrCat(" prompt=", logged_prompt_, " completion=", LogQuote(logged_completion_)));
  if (holds_stream_quota_) service_->ClosePrincipalStream(caller_.principal);
  MambaServeService* service = service_;
  delete this;
  service->AddOpenStream(-1);
}

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* StartGenerate(MambaServeService* service,
                                                          grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request) {
  auto* reactor = new GenerateReactor(service, context);
  reactor->Start(*request);
  return reactor;
}

}  // namespace mambaserve
