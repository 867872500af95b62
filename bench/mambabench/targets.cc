#include "bench/mambabench/targets.h"

#include <chrono>
#include <future>
#include <thread>

#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"

namespace mambaserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Arrival times to TTFT and per-token gaps: a message carrying n tokens after a gap g counts n
// gaps of g / n (the server may batch tokens into one message when the client reads slowly).
class ArrivalClock {
 public:
  ArrivalClock(StreamResult* out, const std::function<void(int64_t)>& on_tokens)
      : out_(out), on_tokens_(on_tokens), start_(Clock::now()), last_(start_) {}
  void Tokens(const int32_t* ids, int n) {
    if (n <= 0) return;
    const auto now = Clock::now();
    if (out_->ttft_s < 0) {
      out_->ttft_s = std::chrono::duration<double>(now - start_).count();
      --n;  // the first token has no gap before it
    }
    const double gap = std::chrono::duration<double>(now - last_).count();
    for (int i = 0; i < n; ++i) out_->inter_token_s.push_back(gap / n);
    last_ = now;
  }
  void Done() { out_->e2e_s = Since(start_); }
  void Append(const int32_t* ids, int n) {
    out_->tokens.insert(out_->tokens.end(), ids, ids + n);
    if (on_tokens_ && n > 0) on_tokens_(static_cast<int64_t>(out_->tokens.size()));
  }

 private:
  StreamResult* out_;
  const std::function<void(int64_t)>& on_tokens_;
  const Clock::time_point start_;
  Clock::time_point last_;
};

class GrpcTarget final : public Target {
 public:
  GrpcTarget(std::shared_ptr<grpc::Channel> channel, int64_t vocab)
      : stub_(v1::MambaServe::NewStub(channel)), vocab_(vocab) {}

  int64_t vocab_size() const override { return vocab_; }

  StreamResult Generate(const BenchRequest& r) override {
    v1::GenerateRequest request;
    for (int32_t id : r.prompt) request.mutable_tokens()->add_ids(id);
    request.mutable_sampling()->set_max_tokens(r.max_tokens);
    request.mutable_sampling()->set_temperature(0);
    request.mutable_sampling()->set_ignore_eos(true);
    request.set_session_id(r.session_id);
    grpc::ClientContext context;
    StreamResult result;
    ArrivalClock clock(&result, r.on_tokens);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      const int n = response.token_ids_size();
      clock.Tokens(response.token_ids().data(), n);
      clock.Append(response.token_ids().data(), n);
    }
    const grpc::Status status = reader->Finish();
    clock.Done();
    result.code = static_cast<int>(status.error_code());
    result.error = status.error_message();
    return result;
  }

  absl::Status CreateSession(const std::string& id) override {
    grpc::ClientContext context;
    v1::CreateSessionRequest request;
    request.set_session_id(id);
    v1::Session session;
    return ToAbsl(stub_->CreateSession(&context, request, &session));
  }

  absl::Status DeleteSession(const std::string& id) override {
    grpc::ClientContext context;
    v1::DeleteSessionRequest request;
    request.set_session_id(id);
    v1::DeleteSessionResponse response;
    return ToAbsl(stub_->DeleteSession(&context, request, &response));
  }

 private:
  static absl::Status ToAbsl(const grpc::Status& s) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }

  std::unique_ptr<v1::MambaServe::Stub> stub_;
  const int64_t vocab_;
};

class InProcessTarget final : public Target {
 public:
  explicit InProcessTarget(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}

  int64_t vocab_size() const override { return engine_->info().config.vocab_size; }

  StreamResult Generate(const BenchRequest& r) override {
    GenerationRequest request;
    request.prompt = r.prompt;
    request.sampling.max_tokens = r.max_tokens;
    request.sampling.temperature = 0;
    request.sampling.ignore_eos = true;
    request.session_id = r.session_id;
    request.stream = std::make_shared<GenerationStream>(16);
    auto stream = request.stream;
    // Woken by the stream's listener, as a server's reactor is, rather than polling.
    std::mutex mu;
    std::condition_variable ready;
    stream->SetListener([&] {
      std::lock_guard<std::mutex> lock(mu);
      ready.notify_one();
    });
    StreamResult result;
    ArrivalClock clock(&result, r.on_tokens);
    absl::Status status = engine_->Submit(std::move(request));
    while (status.ok()) {
      std::optional<GenerationEvent> event;
      {
        std::unique_lock<std::mutex> lock(mu);
        ready.wait(lock, [&] { return stream->HasEvents(); });
        event = stream->Pop();
      }
      if (!event) continue;
      const int n = static_cast<int>(event->token_ids.size());
      clock.Tokens(event->token_ids.data(), n);
      clock.Append(event->token_ids.data(), n);
      if (event->final) {
        status = event->status;
        break;
      }
    }
    stream->SetListener(nullptr);
    clock.Done();
    result.code = static_cast<int>(status.code());
    result.error = std::string(status.message());
    return result;
  }

  absl::Status CreateSession(const std::string& id) override {
    std::promise<absl::Status> done;
    engine_->CreateSession(id, [&](absl::StatusOr<SessionInfo> s) { done.set_value(s.status()); });
    return done.get_future().get();
  }

  absl::Status DeleteSession(const std::string& id) override {
    std::promise<absl::Status> done;
    engine_->DeleteSession(id, [&](absl::Status s) { done.set_value(s); });
    return done.get_future().get();
  }

 private:
  std::unique_ptr<Engine> engine_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Target>> ConnectGrpcTarget(const std::string& address) {
  grpc::ChannelArguments arguments;
  // One connection per stream would measure connection setup; one shared HTTP/2 connection
  // carries every stream, as a client library does.
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
  auto stub = v1::MambaServe::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetModelInfoRequest request;
  v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&context, request, &info);
  if (!status.ok()) {
    return absl::UnavailableError("GetModelInfo at " + address + ": " + status.error_message());
  }
  return std::make_unique<GrpcTarget>(channel, info.vocab_size());
}

absl::StatusOr<std::unique_ptr<Target>> StartInProcessTarget(const std::string& model_dir,
                                                             int threads, int max_batch) {
  EngineOptions options;
  options.model_dir = model_dir;
  options.backend.kind = BackendKind::kCpu;
  options.backend.num_threads = threads;
  options.backend.num_slots = std::max(128, max_batch);
  options.scheduler.max_batch = max_batch;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(std::move(options));
  if (!engine.ok()) return engine.status();
  return std::make_unique<InProcessTarget>(*std::move(engine));
}

}  // namespace mambaserve::bench
