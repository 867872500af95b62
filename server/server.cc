#include "server/server.h"

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/log.h"
#include "server/metrics/http_exposer.h"
#include "server/metrics/process_metrics.h"
#include "server/metrics/registry.h"
#include "server/metrics/serving_metrics.h"
#include "server/service.h"
#include "server/serving_metrics_adapter.h"

namespace mambaserve {
namespace {

constexpr char kServiceName[] = "mambaserve.v1.MambaServe";

absl::StatusOr<std::unique_ptr<ServingEngine>> LoadEngine(
    const ServeOptions& options, std::function<void(const SchedulerStats&)> on_step) {
  auto engine = std::make_unique<ServingEngine>();
  engine->model_dir = options.model_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadModel(options.model_dir));
  engine->model = std::move(model);
  const std::string tokenizer_path = absl::StrCat(options.model_dir, "/tokenizer.json");
  if (std::ifstream(tokenizer_path).good()) {
    ASSIGN_OR_RETURN(engine->tokenizer, Tokenizer::FromFile(tokenizer_path));
    if (engine->tokenizer->vocab_size() > engine->model->config.vocab_size) {
      LogWarning(tokenizer_path, " defines ", engine->tokenizer->vocab_size(), " tokens but the model has ",
                 engine->model->config.vocab_size, " embedding rows: prompts that use the extra ids are refused");
    }
  } else {
    LogWarning("no tokenizer.json in ", options.model_dir, ": serving token-id prompts only");
  }
  BackendOptions backend_options;
  backend_options.kind = options.backend;
  backend_options.num_slots = std::max(options.max_sessions, options.max_batch);
  backend_options.weight_dtype = options.weight_dtype;
  backend_options.num_threads = options.threads;
  backend_options.gpu_memory_fraction = options.gpu_memory_fraction;
  backend_options.gpu_device = options.gpu_device;
  std::string fallback_reason;
  ASSIGN_OR_RETURN(engine->backend, CreateBackend(engine->model, backend_options, &fallback_reason));
  if (!fallback_reason.empty()) LogInfo("backend auto: using the CPU (", fallback_reason, ")");
  engine->backend_info = engine->backend->info();

  // Warm-up: one short prefill and decode on slot 0, so the first request pays no first-touch costs.
  const int32_t token = 0;
  Step step;
  step.sequences.push_back({0, std::span<const int32_t>(&token, 1), true, true});
  StepOutput out;
  RETURN_IF_ERROR(engine->backend->Forward(step, &out));
  step.sequences[0].start_fresh = false;
  RETURN_IF_ERROR(engine->backend->Forward(step, &out));
  RETURN_IF_ERROR(engine->backend->ResetSlot(0));

  SchedulerOptions scheduler_options;
  scheduler_options.max_batch = options.max_batch;
  scheduler_options.max_queue = options.max_queue;
  scheduler_options.max_step_tokens = options.max_step_tokens;
  scheduler_options.sessions.host_budget_bytes = options.host_state_budget_mb * 1024 * 1024;
  scheduler_options.sessions.ttl_ms = options.session_ttl_s * 1000;
  scheduler_options.sessions.max_sessions = options.max_named_sessions;
  scheduler_options.stalled_reader_timeout_ms = options.stalled_reader_timeout_s * 1000;
  scheduler_options.on_step = std::move(on_step);
  engine->scheduler = std::make_unique<Scheduler>(engine->backend.get(), engine->tokenizer.get(),
                                                  engine->model->fingerprint, scheduler_options);
  engine->scheduler->Start();
  return engine;
}

// The model_name label: --served-model-name, else the model directory's last component.
std::string ServedModelName(const ServeOptions& options) {
  if (!options.served_model_name.empty()) return options.served_model_name;
  std::filesystem::path dir(options.model_dir);
  if (dir.filename().empty()) dir = dir.parent_path();  // "dir/"
  return dir.filename().empty() ? "mamba" : dir.filename().string();
}

}  // namespace

absl::Status RunServer(const ServeOptions& options) {
  // Signals are taken synchronously by sigwait below; every thread started from here inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ServiceLimits limits;
  limits.max_prompt_tokens = options.max_prompt_tokens;
  limits.default_max_tokens = std::min(options.default_max_tokens, options.max_tokens_limit);
  limits.sampling.max_tokens = options.max_tokens_limit;
  limits.stream_buffer = options.stream_buffer;
  MambaServeService service(limits);

  // Prometheus metrics: registry and endpoint first, so process metrics are served while loading.
  // Scrapes run on the endpoint's own threads and read published snapshots only.
  metrics::Registry registry;
  metrics::AddProcessCollector(&registry);
  std::unique_ptr<metrics::ServingMetrics> serving_metrics;
  std::shared_ptr<SchedulerStatsSource> stats_source;
  std::unique_ptr<metrics::HttpExposer> metrics_endpoint;
  if (!options.metrics_listen.empty()) {
    auto started = metrics::HttpExposer::Start(&registry, {.listen = options.metrics_listen});
    if (started.ok()) {
      metrics_endpoint = *std::move(started);
      LogInfo("metrics on http://", options.metrics_listen.substr(0, options.metrics_listen.rfind(':')), ":",
              metrics_endpoint->port(), "/metrics");
    } else {
      LogWarning("serving without metrics: ", started.status().message());
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(std::make_unique<GrpcMetricsInterceptorFactory>(service.metrics_slot()));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(256 * 1024 * 1024);  // imported session blobs can be large
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("could not listen on ", options.listen));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  LogInfo("listening on ", options.listen, " (port ", port, "); loading ", options.model_dir);
  if (!options.port_file.empty()) {
    const std::string scratch = options.port_file + ".tmp";
    std::ofstream(scratch) << port << "\n";
    std::rename(scratch.c_str(), options.port_file.c_str());
  }

  const auto load_start = std::chrono::steady_clock::now();
  if (options.prepare_model) {
    if (absl::Status prepared = options.prepare_model(); !prepared.ok()) {
      server->Shutdown();
      return prepared;
    }
  }
  absl::StatusOr<std::unique_ptr<ServingEngine>> engine =
      LoadEngine(options, [&service](const SchedulerStats& s) {
        if (metrics::ServingMetrics* m = service.metrics()) {
          m->StepCompleted(s.batch_size, s.step_tokens, s.step_seconds);
        }
      });
  if (!engine.ok()) {
    server->Shutdown();
    return engine.status();
  }
  service.SetEngine(engine->get());
  {
    const BackendInfo& backend = (*engine)->backend_info;
    auto created = metrics::ServingMetrics::Create(
        &registry, {.model_name = ServedModelName(options),
                    .version = MAMBASERVE_VERSION,
                    .backend = backend.name,
                    .dtype = absl::AsciiStrToLower(DTypeName(backend.weight_dtype))});
    if (created.ok()) {
      serving_metrics = *std::move(created);
      stats_source = std::make_shared<SchedulerStatsSource>((*engine)->scheduler.get(), backend);
      serving_metrics->SetEngineStatsSource(stats_source);
      service.SetMetrics(serving_metrics.get());
    } else {
      LogWarning("serving without request metrics: ", created.status().message());
    }
  }
  health->SetServingStatus(kServiceName, true);
  health->SetServingStatus(true);
  const BackendInfo& info = (*engine)->backend_info;
  LogInfo("serving ", ModelTypeName((*engine)->model->config.model_type), " from ", options.model_dir, " on ",
          info.name, " (", info.device, "), ", info.num_slots, " state slots of ", info.state_bytes_per_slot,
          " bytes, ready in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - load_start).count(),
          " ms");

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogInfo("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT", ": draining for up to ",
          options.shutdown_grace_s, " s");
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);
  // New generations are refused (UNAVAILABLE); running and queued ones get the grace period to
  // finish while the scheduler keeps stepping. Then gRPC cancels whatever is left.
  service.StopAccepting();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(options.shutdown_grace_s);
  while (std::chrono::steady_clock::now() < give_up) {
    const SchedulerStats stats = (*engine)->scheduler->stats().Snapshot();
    if (stats.running == 0 && stats.waiting == 0 && service.open_streams() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  (*engine)->scheduler->Stop();
  server->Wait();
  server.reset();
  if (stats_source) stats_source->Detach();  // scrapes stop reading the scheduler before it goes
  engine->reset();
  LogInfo("stopped");
  return absl::OkStatus();
}

}  // namespace mambaserve
