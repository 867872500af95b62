#include "server/metrics/serving_metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mambaserve::metrics {
namespace {

constexpr size_t kMaxRejectionReasons = 16;
constexpr size_t kMaxGrpcSeries = 256;  // methods x 17 codes

template <typename T>
absl::Status Assign(absl::StatusOr<T> result, T* out) {
  if (!result.ok()) return result.status();
  *out = *result;
  return absl::OkStatus();
}

Labels ModelLabel(const std::string& model_name) { return {{"model_name", model_name}}; }

void AddScalar(std::vector<FamilySnapshot>* out, std::string name, std::string help,
               MetricType type, const Labels& labels, double value) {
  FamilySnapshot family{std::move(name), std::move(help), type, {}};
  family.samples.push_back({labels, value, {}});
  out->push_back(std::move(family));
}

}  // namespace

std::string_view FinishReasonLabel(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      break;
  }
  return "abort";
}

std::string_view GrpcCodeName(int code) {
  static constexpr std::string_view kNames[] = {"OK",
                                                "CANCELLED",
                                                "UNKNOWN",
                                                "INVALID_ARGUMENT",
                                                "DEADLINE_EXCEEDED",
                                                "NOT_FOUND",
                                                "ALREADY_EXISTS",
                                                "PERMISSION_DENIED",
                                                "RESOURCE_EXHAUSTED",
                                                "FAILED_PRECONDITION",
                                                "ABORTED",
                                                "OUT_OF_RANGE",
                                                "UNIMPLEMENTED",
                                                "INTERNAL",
                                                "UNAVAILABLE",
                                                "DATA_LOSS",
                                                "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

const std::vector<double>& TimeToFirstTokenBuckets() {
  static const std::vector<double> kBounds = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                              0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                              20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
  return kBounds;
}

const std::vector<double>& InterTokenLatencyBuckets() {
  static const std::vector<double> kBounds = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                              0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                              7.5,  10.0,  20.0, 40.0,  80.0};
  return kBounds;
}

const std::vector<double>& RequestLatencyBuckets() {
  static const std::vector<double> kBounds = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                              5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                              60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return kBounds;
}

const std::vector<double>& StepBatchSizeBuckets() {
  static const std::vector<double> kBounds = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  return kBounds;
}

const std::vector<double>& StepTokensBuckets() {
  // vLLM's vllm:iteration_tokens_total bounds.
  static const std::vector<double> kBounds = {1,   8,    16,   32,   64,   128,  256,
                                              512, 1024, 2048, 4096, 8192, 16384};
  return kBounds;
}

const std::vector<double>& StepDurationBuckets() {
  static const std::vector<double> kBounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                              0.1,    0.2,   0.5,   1.0,   2.0,  5.0};
  return kBounds;
}

absl::StatusOr<std::unique_ptr<ServingMetrics>> ServingMetrics::Create(
    Registry* registry, const ServingMetricsOptions& options) {
  if (options.max_model_len < 1) {
    return absl::InvalidArgumentError("serving metrics: max_model_len must be at least 1");
  }
  std::unique_ptr<ServingMetrics> metrics(new ServingMetrics(options));
  if (absl::Status s = metrics->Register(registry); !s.ok()) return s;
  return metrics;
}

absl::Status ServingMetrics::Register(Registry* registry) {
  const std::string& model = options_.model_name;
  auto counter = [&](const std::string& name, const std::string& help,
                     Counter** out) -> absl::Status {
    Family<Counter>* family = nullptr;
    if (absl::Status s = Assign(registry->AddCounter(name, help, {"model_name"}), &family);
        !s.ok()) {
      return s;
    }
    *out = &family->WithLabels({model});
    return absl::OkStatus();
  };
  auto histogram = [&](const std::string& name, const std::string& help,
                       const std::vector<double>& bounds, Histogram** out) -> absl::Status {
    Family<Histogram>* family = nullptr;
    if (absl::Status s =
            Assign(registry->AddHistogram(name, help, {"model_name"}, bounds), &family);
        !s.ok()) {
      return s;
    }
    *out = &family->WithLabels({model});
    return absl::OkStatus();
  };
  const std::vector<double> token_buckets =
      OneTwoFiveBuckets(static_cast<double>(options_.max_model_len));

  // vLLM-compatible.
  absl::Status s =
      counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", &prompt_tokens_);
  if (s.ok()) {
    s = counter("vllm:generation_tokens_total", "Number of generation tokens processed.",
                &generation_tokens_);
  }
  if (s.ok()) {
    Family<Counter>* success = nullptr;
    s = Assign(registry->AddCounter("vllm:request_success_total",
                                    "Count of successfully processed requests.",
                                    {"model_name", "finished_reason"}),
               &success);
    if (s.ok()) {
      for (FinishReason r : {FinishReason::kStop, FinishReason::kLength, FinishReason::kAbort}) {
        success_[static_cast<int>(r)] = &success->WithLabels({model, FinishReasonLabel(r)});
      }
    }
  }
  if (s.ok()) {
    s = histogram("vllm:time_to_first_token_seconds",
                  "Histogram of time to first token in seconds.", TimeToFirstTokenBuckets(),
                  &ttft_);
  }
  if (s.ok()) {
    s = histogram("vllm:inter_token_latency_seconds",
                  "Histogram of inter-token latency in seconds.", InterTokenLatencyBuckets(),
                  &inter_token_);
  }
  if (s.ok()) {
    s = histogram("vllm:time_per_output_token_seconds",
                  "Histogram of time per output token in seconds (same observations as "
                  "vllm:inter_token_latency_seconds; kept for older dashboards).",
                  InterTokenLatencyBuckets(), &time_per_output_token_);
  }
  if (s.ok()) {
    s = histogram("vllm:e2e_request_latency_seconds",
                  "Histogram of e2e request latency in seconds.", RequestLatencyBuckets(), &e2e_);
  }
  if (s.ok()) {
    s = histogram("vllm:request_queue_time_seconds",
                  "Histogram of time spent in WAITING phase for request.", RequestLatencyBuckets(),
                  &queue_);
  }
  if (s.ok()) {
    s = histogram("vllm:request_inference_time_seconds",
                  "Histogram of time spent in RUNNING phase for request.", RequestLatencyBuckets(),
                  &inference_);
  }
  if (s.ok()) {
    s = histogram("vllm:request_prefill_time_seconds",
                  "Histogram of time spent in PREFILL phase for request.", RequestLatencyBuckets(),
                  &prefill_);
  }
  if (s.ok()) {
    s = histogram("vllm:request_decode_time_seconds",
                  "Histogram of time spent in DECODE phase for request.", RequestLatencyBuckets(),
                  &decode_);
  }
  if (s.ok()) {
    s = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                  token_buckets, &prompt_tokens_per_request_);
  }
  if (s.ok()) {
    s = histogram("vllm:request_generation_tokens", "Number of generation tokens processed.",
                  token_buckets, &generation_tokens_per_request_);
  }

  // mambaserve's own.
  if (s.ok()) {
    s = counter("mambaserve_requests_admitted_total",
                "Requests accepted into the scheduler's waiting queue.", &admitted_);
  }
  if (s.ok()) {
    s = Assign(registry->AddCounter("mambaserve_admission_rejections_total",
                                    "Requests refused at admission, by reason.",
                                    {"model_name", "reason"}, kMaxRejectionReasons),
               &rejections_);
  }
  if (s.ok()) {
    s = Assign(registry->AddCounter("mambaserve_grpc_requests_total",
                                    "Completed gRPC calls, by method and status code.",
                                    {"model_name", "method", "code"}, kMaxGrpcSeries),
               &grpc_requests_);
  }
  if (s.ok()) {
    s = histogram("mambaserve_scheduler_step_batch_size", "Sequences per scheduler step.",
                  StepBatchSizeBuckets(), &step_batch_size_);
  }
  if (s.ok()) {
    s = histogram("mambaserve_scheduler_step_tokens",
                  "Tokens per scheduler step (prefill chunks plus one per decoding sequence).",
                  StepTokensBuckets(), &step_tokens_);
  }
  if (s.ok()) {
    s = histogram("mambaserve_scheduler_step_duration_seconds",
                  "Wall time of one scheduler step (forward pass and sampling).",
                  StepDurationBuckets(), &step_duration_);
  }
  if (s.ok()) {
    Family<Gauge>* build_info = nullptr;
    s = Assign(registry->AddGauge("mambaserve_build_info",
                                  "Always 1; labels describe the running build and model.",
                                  {"model_name", "version", "backend", "dtype"}),
               &build_info);
    if (s.ok()) {
      build_info->WithLabels({model, options_.version, options_.backend, options_.dtype}).Set(1);
    }
  }
  if (!s.ok()) return s;
  registry->AddCollector([this](std::vector<FamilySnapshot>* out) { CollectEngine(out); });
  return absl::OkStatus();
}

void ServingMetrics::SetEngineStatsSource(std::shared_ptr<const EngineStatsSource> source) {
  std::lock_guard<std::mutex> lock(source_mu_);
  source_ = std::move(source);
}

void ServingMetrics::RequestAdmitted() { admitted_->Increment(); }

void ServingMetrics::RequestRejected(std::string_view reason) {
  rejections_->WithLabels({options_.model_name, reason}).Increment();
}

void ServingMetrics::PromptTokensProcessed(int64_t tokens) {
  if (tokens > 0) prompt_tokens_->Increment(static_cast<double>(tokens));
}

void ServingMetrics::FirstToken(double ttft_seconds) {
  ttft_->Observe(ttft_seconds);
  generation_tokens_->Increment();
}

void ServingMetrics::NextTokens(int64_t n, double seconds_since_previous) {
  if (n <= 0) return;
  const double each = seconds_since_previous / static_cast<double>(n);
  inter_token_->ObserveMany(each, static_cast<uint64_t>(n));
  time_per_output_token_->ObserveMany(each, static_cast<uint64_t>(n));
  generation_tokens_->Increment(static_cast<double>(n));
}

void ServingMetrics::RequestFinished(const FinishedRequest& request) {
  success_[static_cast<int>(request.reason)]->Increment();
  e2e_->Observe(request.e2e_seconds);
  queue_->Observe(request.queue_seconds);
  inference_->Observe(request.prefill_seconds + request.decode_seconds);
  prefill_->Observe(request.prefill_seconds);
  decode_->Observe(request.decode_seconds);
  prompt_tokens_per_request_->Observe(static_cast<double>(request.prompt_tokens));
  generation_tokens_per_request_->Observe(static_cast<double>(request.generation_tokens));
}

void ServingMetrics::GrpcCallCompleted(std::string_view method, int code) {
  grpc_requests_->WithLabels({options_.model_name, method, GrpcCodeName(code)}).Increment();
}

void ServingMetrics::StepCompleted(int64_t batch_size, int64_t tokens, double seconds) {
  step_batch_size_->Observe(static_cast<double>(batch_size));
  step_tokens_->Observe(static_cast<double>(tokens));
  step_duration_->Observe(seconds);
}

void ServingMetrics::CollectEngine(std::vector<FamilySnapshot>* out) const {
  std::shared_ptr<const EngineStatsSource> source;
  {
    std::lock_guard<std::mutex> lock(source_mu_);
    source = source_;
  }
  if (source == nullptr) return;
  const EngineStats stats = source->Snapshot();
  const Labels model = ModelLabel(options_.model_name);
  auto with = [&](std::string name, std::string value) {
    Labels labels = model;
    labels.emplace_back(std::move(name), std::move(value));
    return labels;
  };
  const double slots_in_use = static_cast<double>(stats.slots_active + stats.slots_idle_resident);
  const double usage =
      stats.slots_total > 0 ? slots_in_use / static_cast<double>(stats.slots_total) : 0.0;

  AddScalar(out, "vllm:num_requests_running", "Number of requests in model execution batches.",
            MetricType::kGauge, model, static_cast<double>(stats.requests_running));
  AddScalar(out, "vllm:num_requests_waiting", "Number of requests waiting to be processed.",
            MetricType::kGauge, model, static_cast<double>(stats.requests_waiting));
  AddScalar(out, "vllm:kv_cache_usage_perc",
            "Fraction of SSM state slots in use (running or idle-resident sessions). "
            "1 means 100 percent usage.",
            MetricType::kGauge, model, usage);
  AddScalar(out, "vllm:gpu_cache_usage_perc", "Same as vllm:kv_cache_usage_perc (older vLLM name).",
            MetricType::kGauge, model, usage);

  AddScalar(out, "mambaserve_state_slots_capacity",
            "State slots reserved at start (fixed: memory does not grow with tokens).",
            MetricType::kGauge, model, static_cast<double>(stats.slots_total));
  {
    FamilySnapshot slots{"mambaserve_state_slots", "State slots by state.", MetricType::kGauge, {}};
    const int64_t free_slots =
        std::max<int64_t>(0, stats.slots_total - stats.slots_active - stats.slots_idle_resident);
    slots.samples.push_back({with("state", "active"), static_cast<double>(stats.slots_active), {}});
    slots.samples.push_back(
        {with("state", "idle_resident"), static_cast<double>(stats.slots_idle_resident), {}});
    slots.samples.push_back({with("state", "free"), static_cast<double>(free_slots), {}});
    out->push_back(std::move(slots));
  }
  if (stats.sessions_live >= 0) {
    AddScalar(out, "mambaserve_sessions", "Live sessions (resident, parked or not yet used).",
              MetricType::kGauge, model, static_cast<double>(stats.sessions_live));
  }
  AddScalar(out, "mambaserve_sessions_parked_on_host",
            "Idle sessions whose state was moved to host memory to free a slot.",
            MetricType::kGauge, model, static_cast<double>(stats.sessions_parked_on_host));
  AddScalar(out, "mambaserve_state_bytes_per_session",
            "Bytes of one session's state (conv + SSM), independent of its length.",
            MetricType::kGauge, model, static_cast<double>(stats.state_bytes_per_session));
  AddScalar(out, "mambaserve_state_pool_bytes", "Device memory reserved for all state slots.",
            MetricType::kGauge, model, static_cast<double>(stats.state_pool_bytes));
  {
    FamilySnapshot memory{"mambaserve_state_memory_bytes",
                          "State memory holding live sessions, by location.",
                          MetricType::kGauge,
                          {}};
    const double per = static_cast<double>(stats.state_bytes_per_session);
    memory.samples.push_back({with("location", "device"), slots_in_use * per, {}});
    const double host = stats.state_host_bytes >= 0
                            ? static_cast<double>(stats.state_host_bytes)
                            : static_cast<double>(stats.sessions_parked_on_host) * per;
    memory.samples.push_back({with("location", "host"), host, {}});
    out->push_back(std::move(memory));
  }
  if (stats.device_memory_used_bytes >= 0) {
    AddScalar(out, "mambaserve_device_memory_used_bytes",
              "Device memory in use by this process, as the backend reports it.",
              MetricType::kGauge, model, static_cast<double>(stats.device_memory_used_bytes));
  }
  if (stats.device_memory_total_bytes >= 0) {
    AddScalar(out, "mambaserve_device_memory_total_bytes", "Total memory of the device.",
              MetricType::kGauge, model, static_cast<double>(stats.device_memory_total_bytes));
  }
  {
    FamilySnapshot events{"mambaserve_session_events_total",
                          "Session lifecycle events: created, resumed, parked (device to host), "
                          "restored (host to device), evicted, expired.",
                          MetricType::kCounter,
                          {}};
    const std::pair<const char*, int64_t> kEvents[] = {
        {"created", stats.sessions_created}, {"resumed", stats.sessions_resumed},
        {"parked", stats.sessions_parked},   {"restored", stats.sessions_restored},
        {"evicted", stats.sessions_evicted}, {"expired", stats.sessions_expired}};
    for (const auto& [event, n] : kEvents) {
      if (n < 0) continue;  // not counted by this engine
      events.samples.push_back({with("event", event), static_cast<double>(n), {}});
    }
    out->push_back(std::move(events));
  }
}

double RequestTimer::SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

RequestTimer::RequestTimer(ServingMetrics* metrics, int64_t prompt_tokens, Clock clock)
    : metrics_(metrics),
      prompt_tokens_(prompt_tokens),
      clock_(std::move(clock)),
      arrival_(clock_()) {}

RequestTimer::~RequestTimer() { Finish(FinishReason::kAbort); }

void RequestTimer::Scheduled() {
  if (scheduled_ < 0) scheduled_ = clock_();
}

void RequestTimer::ScheduledAfter(double queue_seconds) {
  if (scheduled_ < 0 && queue_seconds >= 0) scheduled_ = arrival_ + queue_seconds;
}

void RequestTimer::Tokens(int64_t n) {
  if (n <= 0 || finished_) return;
  const double now = clock_();
  if (first_token_ < 0) {
    first_token_ = now;
    if (!prompt_counted_) {
      metrics_->PromptTokensProcessed(prompt_tokens_);
      prompt_counted_ = true;
    }
    metrics_->FirstToken(now - arrival_);
    if (n > 1) metrics_->NextTokens(n - 1, 0.0);
  } else {
    metrics_->NextTokens(n, now - last_token_);
  }
  last_token_ = now;
  generated_ += n;
}

void RequestTimer::Finish(FinishReason reason) {
  if (finished_) return;
  finished_ = true;
  const double now = clock_();
  if (scheduled_ < 0 && first_token_ >= 0) scheduled_ = arrival_;  // queue time never reported
  FinishedRequest request;
  request.reason = reason;
  request.prompt_tokens = prompt_tokens_;
  request.generation_tokens = generated_;
  request.e2e_seconds = now - arrival_;
  if (scheduled_ < 0) {
    request.queue_seconds = request.e2e_seconds;  // never left the queue
  } else {
    request.queue_seconds = scheduled_ - arrival_;
    // A request cut off mid-prefill still had its prompt (partly) processed.
    if (!prompt_counted_) {
      metrics_->PromptTokensProcessed(prompt_tokens_);
      prompt_counted_ = true;
    }
    if (first_token_ < 0) {
      request.prefill_seconds = now - scheduled_;
    } else {
      request.prefill_seconds = first_token_ - scheduled_;
      request.decode_seconds = now - first_token_;
    }
  }
  metrics_->RequestFinished(request);
}

}  // namespace mambaserve::metrics
