#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"
#include "server/auth.h"
#include "server/grpc_endpoint.h"
#include "server/metrics/collection.h"
#include "server/metrics/metrics_endpoint.h"
#include "server/metrics/process_metrics.h"
#include "server/metrics/serving_metrics.h"
#include "server/service.h"
#include "server/serving_metrics_adapter.h"
#include "server/termination_signals.h"

namespace mambaserve {
namespace {

// The model_name label: --served-model-name, else the model directory's last component.
std::string ServedModelName(const ServeOptions& options) {
  if (!options.served_model_name.empty()) return options.served_model_name;
  std::filesystem::path dir(options.engine.model_dir);
  if (dir.filename().empty()) dir = dir.parent_path();  // "dir/"
  return dir.filename().empty() ? "mamba" : dir.filename().string();
}

void WritePortFile(const std::string& path, int port) {
  const std::string scratch = path + ".tmp";
  std::ofstream(scratch) << port << "\n";
  std::rename(scratch.c_str(), path.c_str());
}

// Prometheus: the registry and endpoint come first, so process metrics are served while loading.
// Scrapes run on the endpoint's own threads and read published snapshots only.
class MetricsPlumbing {
 public:
  explicit MetricsPlumbing(const std::string& listen) {
    collection_->AddCollector(std::make_shared<metrics::ProcessCollector>());
    if (listen.empty()) return;
    auto started = metrics::MetricsEndpoint::Start(collection_, listen);
    if (!started.ok()) {
      LogWarning("serving without metrics: ", started.status().message());
      return;
    }
    endpoint_ = *std::move(started);
    LogInfo("metrics on http://", listen.substr(0, listen.rfind(':')), ":", endpoint_->port(),
            "/metrics");
  }

  // Request and engine metrics, once the engine runs.
  void Attach(Engine* engine, MambaServeService* service, const std::string& model_name) {
    const BackendInfo& backend = engine->info().backend;
    auto created = metrics::ServingMetrics::Create(
        collection_.get(), {.model_name = model_name,
                            .version = MAMBASERVE_VERSION,
                            .backend = backend.name,
                            .dtype = absl::AsciiStrToLower(DTypeName(backend.weight_dtype))});
    if (!created.ok()) {
      LogWarning("serving without request metrics: ", created.status().message());
      return;
    }
    serving_ = *std::move(created);
    stats_source_ = std::make_shared<SchedulerStatsSource>(engine);
    serving_->SetEngineStatsSource(stats_source_);
    service->SetMetrics(serving_.get());
  }

  // Per-step histograms, called on the scheduler thread: three uncontended observations.
  void StepCompleted(const SchedulerStats& s) {
    if (serving_) serving_->StepCompleted(s.batch_size, s.step_tokens, s.step_seconds);
  }

  // Scrapes stop reading the engine before it goes.
  void Detach() {
    if (stats_source_) stats_source_->Detach();
  }

 private:
  std::shared_ptr<metrics::Collection> collection_ = std::make_shared<metrics::Collection>();
  std::unique_ptr<metrics::MetricsEndpoint> endpoint_;
  std::unique_ptr<metrics::ServingMetrics> serving_;
  std::shared_ptr<SchedulerStatsSource> stats_source_;
};

// New generations and sessions are refused (UNAVAILABLE); running and queued streams get the
// grace period to finish while the scheduler keeps stepping.
void Drain(MambaServeService& service, const Engine& engine, int grace_s) {
  service.StopAccepting();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(grace_s);
  while (std::chrono::steady_clock::now() < give_up) {
    const SchedulerStats stats = engine.stats().Snapshot();
    if (stats.running == 0 && stats.waiting == 0 && service.open_streams() == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void WaitForStreamsToClose(const MambaServeService& service, std::chrono::milliseconds limit) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (service.open_streams() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

absl::Status RunServer(const ServeOptions& options) {
  TerminationSignals::Block();
  const std::string model_name = ServedModelName(options);
  // Not destroyed on the way out (see the end): its HTTP threads may still be answering a scrape.
  auto metrics_owner = std::make_unique<MetricsPlumbing>(options.metrics_listen);
  MetricsPlumbing& metrics = *metrics_owner;
  MambaServeService service(options.limits, model_name);
  std::unique_ptr<TokenAuthenticator> auth;
  if (!options.auth_tokens_file.empty()) {
    ASSIGN_OR_RETURN(auth, TokenAuthenticator::FromFile(options.auth_tokens_file));
    service.SetAuthenticator(auth.get());
    LogInfo("authentication: bearer tokens from ", options.auth_tokens_file,
            "; sessions are scoped to their principal");
  } else if (!options.tls.client_ca_file.empty()) {
    service.SetPrincipalFromCertificate(true);
    LogInfo("authentication: client certificates signed by ", options.tls.client_ca_file,
            "; sessions are scoped to the certificate's common name");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   ServerCredentialsFromFiles(options.tls));

  // Prompts as text are bounded by max_prompt_tokens * 64 bytes; session blobs arrive in chunks
  // of gRPC's default 4 MiB at most.
  const int64_t max_receive = std::max<int64_t>(
      int64_t{4} << 20, int64_t{options.limits.max_prompt_tokens} * 64 + (int64_t{1} << 16));
  ASSIGN_OR_RETURN(GrpcEndpoint grpc,
                   StartGrpcEndpoint(&service, {.listen = options.listen,
                                                .max_receive_bytes = max_receive,
                                                .credentials = std::move(credentials)}));
  LogInfo("listening on ", options.listen, " (port ", grpc.port, ", ",
          options.tls.cert_file.empty()        ? "plaintext"
          : options.tls.client_ca_file.empty() ? "TLS"
                                               : "mutual TLS",
          "); loading ", options.engine.model_dir);
  if (!options.port_file.empty()) WritePortFile(options.port_file, grpc.port);

  const auto load_start = std::chrono::steady_clock::now();
  auto fail = [&grpc](absl::Status status) {
    grpc.server->Shutdown();
    return status;
  };
  if (options.prepare_model) {
    if (absl::Status prepared = options.prepare_model(); !prepared.ok()) return fail(prepared);
  }
  EngineOptions engine_options = options.engine;
  engine_options.scheduler.on_step = [&metrics](const SchedulerStats& s) {
    metrics.StepCompleted(s);
  };
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(std::move(engine_options));
  if (!engine.ok()) return fail(engine.status());
  service.SetEngine(engine->get());
  metrics.Attach(engine->get(), &service, model_name);
  grpc.SetServing(true);
  const EngineInfo& info = (*engine)->info();
  // One structured line a log pipeline can parse: what this replica serves, how, and where.
  LogInfo("ready version=", MAMBASERVE_VERSION, " model=", model_name,
          " model_type=", ModelTypeName(info.config.model_type), " fingerprint=", info.fingerprint,
          " backend=", info.backend.name, " device=\"", info.backend.device,
          "\" dtype=", DTypeName(info.backend.weight_dtype), " slots=", info.backend.num_slots,
          " state_bytes_per_slot=", info.backend.state_bytes_per_slot,
          " max_batch=", info.max_batch, " listen=", options.listen, " grpc_port=", grpc.port,
          " metrics=", options.metrics_listen.empty() ? "off" : options.metrics_listen,
          " ready_ms=",
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                load_start)
              .count());

  int signal_number = TerminationSignals::Wait();
  for (; TerminationSignals::IsReload(signal_number); signal_number = TerminationSignals::Wait()) {
    // Tokens at once; TLS files are re-read on their own every reload interval.
    if (auth == nullptr) {
      LogInfo("received SIGHUP: no --auth-tokens to re-read");
    } else if (absl::Status reloaded = auth->Reload(); reloaded.ok()) {
      LogInfo("received SIGHUP: auth tokens re-read from ", options.auth_tokens_file);
    } else {
      LogWarning("received SIGHUP: keeping the previous auth tokens: ", reloaded.message());
    }
  }
  LogInfo("received ", TerminationSignals::Name(signal_number), ": draining for up to ",
          options.shutdown_grace_s, " s");
  grpc.SetServing(false);
  Drain(service, **engine, options.shutdown_grace_s);
  if (options.engine.session_store) {
    // Every session's newest turn goes to the store, so its next turn continues on another
    // replica. Turns still running past the grace period are not part of it: they fail, and
    // their sessions keep the version before them.
    const absl::Status flushed =
        (*engine)->FlushSessionStore(std::chrono::steady_clock::now() +
                                     std::chrono::seconds(std::max(5, options.shutdown_grace_s)));
    if (flushed.ok()) {
      LogInfo("session store: every session held here is stored");
    } else {
      LogWarning("session store: ", flushed.message());
    }
  }
  // Streams still running after the grace period end cleanly, with UNAVAILABLE and the reason (not
  // as if their clients had cancelled), and get a moment to deliver that; then gRPC cancels
  // whatever is left and waits for every call before the engine goes.
  (*engine)->Stop(
      absl::StrCat("the server is shutting down and its ", options.shutdown_grace_s,
                   " s grace period for running streams is over; retry on another replica"));
  WaitForStreamsToClose(service, std::chrono::seconds(2));
  grpc.server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  grpc.server->Wait();
  // Every call is done, but a response writer may still be returning from its last Finish: join
  // them before the server they call into goes away.
  service.response_writers().Stop();
  grpc.server.reset();
  metrics.Detach();
  engine->reset();
  // The process exits next. Stopping the metrics endpoint in order would wait 1-2 s for its poll
  // loop, and destroying it while a scrape runs would free what that scrape reads: leave it be.
  static_cast<void>(metrics_owner.release());
  LogInfo("stopped");
  return absl::OkStatus();
}

}  // namespace mambaserve
