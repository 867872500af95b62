#include "server/metrics/serving_metrics.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mambaserve::metrics {
namespace {

constexpr size_t kMaxRejectionReasons = 16;
constexpr size_t kMaxGrpcSeries = 256;  // methods x 17 codes

prometheus::ClientMetric Sample(prometheus::MetricType type, prometheus::Labels labels,
                                double value) {
  prometheus::ClientMetric sample;
  for (auto& [name, label_value] : labels) sample.label.push_back({name, label_value});
  if (type == prometheus::MetricType::Counter) {
    sample.counter.value = value;
  } else {
    sample.gauge.value = value;
  }
  return sample;
}

// `n` observations of `value`. prometheus-cpp's ObserveMultiple walks every bucket and needs a
// vector, so a handful of tokens that arrived together are cheaper observed one by one.
void ObserveMany(prometheus::Histogram& histogram, const std::vector<double>& bounds, double value,
                 uint64_t n) {
  if (n <= 16) {
    for (uint64_t i = 0; i < n; ++i) histogram.Observe(value);
    return;
  }
  std::vector<double> increments(bounds.size() + 1, 0.0);
  const size_t bucket = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  increments[bucket] = static_cast<double>(n);
  histogram.ObserveMultiple(increments, value * static_cast<double>(n));
}

}  // namespace

// The engine families, computed from the scheduler's published snapshot at scrape time.
class EngineCollector final : public prometheus::Collectable {
 public:
  explicit EngineCollector(std::string model_name) : model_name_(std::move(model_name)) {}

  void SetSource(std::shared_ptr<const EngineStatsSource> source) {
    std::lock_guard<std::mutex> lock(mu_);
    source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string model_name_;
  mutable std::mutex mu_;
  std::shared_ptr<const EngineStatsSource> source_;  // guarded by mu_
};

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

std::vector<double> OneTwoFiveBuckets(double max_value) {
  std::vector<double> bounds;
  for (double decade = 1;; decade *= 10) {
    for (double mantissa : {1.0, 2.0, 5.0}) {
      const double bound = mantissa * decade;
      if (bound > max_value) return bounds;
      bounds.push_back(bound);
    }
  }
}

absl::StatusOr<std::unique_ptr<ServingMetrics>> ServingMetrics::Create(
    Collection* collection, const ServingMetricsOptions& options) {
  if (options.max_model_len < 1) {
    return absl::InvalidArgumentError("serving metrics: max_model_len must be at least 1");
  }
  std::unique_ptr<ServingMetrics> metrics(new ServingMetrics(options));
  try {
    metrics->Register(collection);
  } catch (const std::exception& e) {  // a name registered twice, or an invalid name
    return absl::AlreadyExistsError(absl::StrCat("serving metrics: ", e.what()));
  }
  return metrics;
}

void ServingMetrics::Register(Collection* collection) {
  prometheus::Registry& registry = collection->registry();
  const prometheus::Labels model = {{"model_name", options_.model_name}};
  auto counter = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add(model);
  };
  auto histogram = [&](const std::string& name, const std::string& help,
                       const std::vector<double>& bounds) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(model,
                                                                                      bounds);
  };
  token_buckets_ = OneTwoFiveBuckets(static_cast<double>(options_.max_model_len));

  // vLLM-compatible.
  prompt_tokens_ = counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.");
  generation_tokens_ =
      counter("vllm:generation_tokens_total", "Number of generation tokens processed.");
  auto& success = prometheus::BuildCounter()
                      .Name("vllm:request_success_total")
                      .Help("Count of successfully processed requests.")
                      .Register(registry);
  for (FinishReason r : {FinishReason::kStop, FinishReason::kLength, FinishReason::kAbort}) {
    success_[static_cast<int>(r)] =
        &success.Add({{"model_name", options_.model_name},
                      {"finished_reason", std::string(FinishReasonLabel(r))}});
  }
  ttft_ = histogram("vllm:time_to_first_token_seconds",
                    "Histogram of time to first token in seconds.", TimeToFirstTokenBuckets());
  inter_token_ =
      histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                InterTokenLatencyBuckets());
  time_per_output_token_ =
      histogram("vllm:time_per_output_token_seconds",
                "Histogram of time per output token in seconds (same observations as "
                "vllm:inter_token_latency_seconds; kept for older dashboards).",
                InterTokenLatencyBuckets());
  e2e_ = histogram("vllm:e2e_request_latency_seconds",
                   "Histogram of e2e request latency in seconds.", RequestLatencyBuckets());
  queue_ =
      histogram("vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.", RequestLatencyBuckets());
  inference_ =
      histogram("vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.", RequestLatencyBuckets());
  prefill_ =
      histogram("vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.", RequestLatencyBuckets());
  decode_ =
      histogram("vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.", RequestLatencyBuckets());
  prompt_tokens_per_request_ = histogram("vllm:request_prompt_tokens",
                                         "Number of prefill tokens processed.", token_buckets_);
  generation_tokens_per_request_ = histogram(
      "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets_);

  // mambaserve's own.
  admitted_ = counter("mambaserve_requests_admitted_total",
                      "Requests accepted into the scheduler's waiting queue.");
  rejections_ = std::make_unique<CappedFamily<prometheus::Counter>>(
      *collection,
      prometheus::BuildCounter()
          .Name("mambaserve_admission_rejections_total")
          .Help("Requests refused at admission, by reason.")
          .Register(registry),
      std::vector<std::string>{"model_name", "reason"}, kMaxRejectionReasons);
  grpc_requests_ = std::make_unique<CappedFamily<prometheus::Counter>>(
      *collection,
      prometheus::BuildCounter()
          .Name("mambaserve_grpc_requests_total")
          .Help("Completed gRPC calls, by method and status code.")
          .Register(registry),
      std::vector<std::string>{"model_name", "method", "code"}, kMaxGrpcSeries);
  step_batch_size_ = histogram("mambaserve_scheduler_step_batch_size",
                               "Sequences per scheduler step.", StepBatchSizeBuckets());
  step_tokens_ =
      histogram("mambaserve_scheduler_step_tokens",
                "Tokens per scheduler step (prefill chunks plus one per decoding sequence).",
                StepTokensBuckets());
  step_duration_ = histogram("mambaserve_scheduler_step_duration_seconds",
                             "Wall time of one scheduler step (forward pass and sampling).",
                             StepDurationBuckets());
  prometheus::BuildGauge()
      .Name("mambaserve_build_info")
      .Help("Always 1; labels describe the running build and model.")
      .Register(registry)
      .Add({{"model_name", options_.model_name},
            {"version", options_.version},
            {"backend", options_.backend},
            {"dtype", options_.dtype}})
      .Set(1);

  engine_ = std::make_shared<EngineCollector>(options_.model_name);
  collection->AddCollector(engine_);
}

void ServingMetrics::SetEngineStatsSource(std::shared_ptr<const EngineStatsSource> source) {
  engine_->SetSource(std::move(source));
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
  ObserveMany(*inter_token_, InterTokenLatencyBuckets(), each, static_cast<uint64_t>(n));
  ObserveMany(*time_per_output_token_, InterTokenLatencyBuckets(), each, static_cast<uint64_t>(n));
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

std::vector<prometheus::MetricFamily> EngineCollector::Collect() const {
  using prometheus::MetricType;
  std::shared_ptr<const EngineStatsSource> source;
  {
    std::lock_guard<std::mutex> lock(mu_);
    source = source_;
  }
  std::vector<prometheus::MetricFamily> out;
  if (source == nullptr) return out;
  const EngineStats stats = source->Snapshot();
  auto with = [&](std::string name, std::string value) {
    return prometheus::Labels{{"model_name", model_name_}, {std::move(name), std::move(value)}};
  };
  auto scalar = [&](std::string name, std::string help, double value,
                    MetricType type = MetricType::Gauge) {
    out.push_back({std::move(name),
                   std::move(help),
                   type,
                   {Sample(type, {{"model_name", model_name_}}, value)}});
  };
  const double slots_in_use = static_cast<double>(stats.slots_active + stats.slots_idle_resident);
  const double usage =
      stats.slots_total > 0 ? slots_in_use / static_cast<double>(stats.slots_total) : 0.0;

  scalar("vllm:num_requests_running", "Number of requests in model execution batches.",
         static_cast<double>(stats.requests_running));
  scalar("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
         static_cast<double>(stats.requests_waiting));
  scalar("vllm:kv_cache_usage_perc",
         "Fraction of SSM state slots in use (running or idle-resident sessions). "
         "1 means 100 percent usage.",
         usage);
  scalar("vllm:gpu_cache_usage_perc", "Same as vllm:kv_cache_usage_perc (older vLLM name).", usage);

  scalar("mambaserve_state_slots_capacity",
         "State slots reserved at start (fixed: memory does not grow with tokens).",
         static_cast<double>(stats.slots_total));
  {
    const int64_t free_slots =
        std::max<int64_t>(0, stats.slots_total - stats.slots_active - stats.slots_idle_resident);
    out.push_back(
        {"mambaserve_state_slots",
         "State slots by state.",
         MetricType::Gauge,
         {Sample(MetricType::Gauge, with("state", "active"),
                 static_cast<double>(stats.slots_active)),
          Sample(MetricType::Gauge, with("state", "idle_resident"),
                 static_cast<double>(stats.slots_idle_resident)),
          Sample(MetricType::Gauge, with("state", "free"), static_cast<double>(free_slots))}});
  }
  if (stats.sessions_live >= 0) {
    scalar("mambaserve_sessions", "Live sessions (resident, parked or not yet used).",
           static_cast<double>(stats.sessions_live));
  }
  scalar("mambaserve_sessions_parked_on_host",
         "Idle sessions whose state was moved to host memory to free a slot.",
         static_cast<double>(stats.sessions_parked_on_host));
  scalar("mambaserve_state_bytes_per_session",
         "Bytes of one session's state (conv + SSM), independent of its length.",
         static_cast<double>(stats.state_bytes_per_session));
  scalar("mambaserve_state_pool_bytes", "Device memory reserved for all state slots.",
         static_cast<double>(stats.state_pool_bytes));
  {
    const double per = static_cast<double>(stats.state_bytes_per_session);
    const double host = stats.state_host_bytes >= 0
                            ? static_cast<double>(stats.state_host_bytes)
                            : static_cast<double>(stats.sessions_parked_on_host) * per;
    out.push_back({"mambaserve_state_memory_bytes",
                   "State memory holding live sessions, by location.",
                   MetricType::Gauge,
                   {Sample(MetricType::Gauge, with("location", "device"), slots_in_use * per),
                    Sample(MetricType::Gauge, with("location", "host"), host)}});
  }
  if (stats.device_memory_used_bytes >= 0) {
    scalar("mambaserve_device_memory_used_bytes",
           "Device memory in use by this process, as the backend reports it.",
           static_cast<double>(stats.device_memory_used_bytes));
  }
  if (stats.device_memory_total_bytes >= 0) {
    scalar("mambaserve_device_memory_total_bytes", "Total memory of the device.",
           static_cast<double>(stats.device_memory_total_bytes));
  }
  {
    prometheus::MetricFamily events{"mambaserve_session_events_total",
                                    "Session lifecycle events: created, resumed, parked (device to "
                                    "host), restored (host to device), evicted, expired.",
                                    MetricType::Counter,
                                    {}};
    const std::pair<const char*, int64_t> kEvents[] = {
        {"created", stats.sessions_created}, {"resumed", stats.sessions_resumed},
        {"parked", stats.sessions_parked},   {"restored", stats.sessions_restored},
        {"evicted", stats.sessions_evicted}, {"expired", stats.sessions_expired}};
    for (const auto& [event, n] : kEvents) {
      if (n < 0) continue;  // not counted by this engine
      events.metric.push_back(
          Sample(MetricType::Counter, with("event", event), static_cast<double>(n)));
    }
    out.push_back(std::move(events));
  }
  if (stats.prefix_cache_hits >= 0) {
    out.push_back({"mambaserve_prefix_cache_lookups_total",
                   "Prefix-state cache lookups by requests without a session whose prompt is a "
                   "block or longer, by result.",
                   MetricType::Counter,
                   {Sample(MetricType::Counter, with("result", "hit"),
                           static_cast<double>(stats.prefix_cache_hits)),
                    Sample(MetricType::Counter, with("result", "miss"),
                           static_cast<double>(stats.prefix_cache_misses))}});
    scalar("mambaserve_prefix_cache_saved_prompt_tokens_total",
           "Prompt tokens not prefilled because the state at their prefix was cached.",
           static_cast<double>(stats.prefix_cache_saved_tokens), MetricType::Counter);
    scalar("mambaserve_prefix_cache_bytes", "Bytes of states and token ids the cache holds.",
           static_cast<double>(stats.prefix_cache_bytes));
    scalar("mambaserve_prefix_cache_entries", "Prefix states the cache holds.",
           static_cast<double>(stats.prefix_cache_entries));
  }
  if (stats.session_store_writes >= 0) {
    const auto counter = [&](const char* name, const char* help, double value) {
      scalar(name, help, value, MetricType::Counter);
    };
    counter("mambaserve_session_store_loads_total",
            "Sessions read from the session store: not held by this replica, or a newer version.",
            static_cast<double>(stats.session_store_loads));
    counter("mambaserve_session_store_writes_total", "Session versions written to the store.",
            static_cast<double>(stats.session_store_writes));
    counter("mambaserve_session_store_written_bytes_total", "Bytes of session blobs written.",
            static_cast<double>(stats.session_store_written_bytes));
    counter("mambaserve_session_store_write_seconds_total",
            "Time spent writing session versions (divide by the writes for the mean).",
            stats.session_store_write_seconds);
    counter("mambaserve_session_store_lease_conflicts_total",
            "Turns refused ABORTED because the session had a turn running elsewhere.",
            static_cast<double>(stats.session_store_lease_conflicts));
    counter("mambaserve_session_store_errors_total",
            "Session store operations that failed (unreachable, timed out, full, corrupt).",
            static_cast<double>(stats.session_store_errors));
    scalar("mambaserve_session_store_unstored_sessions",
           "Sessions held here whose newest turn is not in the store yet.",
           static_cast<double>(stats.session_store_unstored_sessions));
  }
  return out;
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
