#include "server/metrics/serving_metrics.h"

#include <cmath>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mambaserve::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class FakeClock {
 public:
  double Now() const { return now_; }
  void Advance(double seconds) { now_ += seconds; }
  RequestTimer::Clock clock() {
    return [this] { return now_; };
  }

 private:
  double now_ = 1000;
};

class FixedSource : public EngineStatsSource {
 public:
  explicit FixedSource(EngineStats stats) : stats_(std::move(stats)) {}
  EngineStats Snapshot() const override { return stats_; }

 private:
  EngineStats stats_;
};

using Families = std::map<std::string, prometheus::MetricFamily>;

// Family name -> family, from a scrape of the collection.
Families ByName(const Collection& collection) {
  Families out;
  for (auto& f : collection.Collect()) out[f.name] = f;
  return out;
}

bool HasLabel(const prometheus::ClientMetric& sample, const std::string& name,
              const std::string& value) {
  for (const auto& label : sample.label) {
    if (label.name == name && label.value == value) return true;
  }
  return false;
}

double Value(const Families& families, const std::string& name, const std::string& label = "",
             const std::string& label_value = "") {
  const prometheus::MetricFamily& f = families.at(name);
  for (const prometheus::ClientMetric& s : f.metric) {
    if (!label.empty() && !HasLabel(s, label, label_value)) continue;
    return f.type == prometheus::MetricType::Counter ? s.counter.value : s.gauge.value;
  }
  ADD_FAILURE() << name << "{" << label << "=" << label_value << "} not found";
  return -1;
}

// A histogram's state with per-bucket (not cumulative) counts; the last is (max bound, +Inf].
struct HistogramData {
  std::vector<double> upper_bounds;
  std::vector<uint64_t> bucket_counts;
  double sum = 0;
  uint64_t observations = 0;
  uint64_t count() const { return observations; }
};

HistogramData Hist(const Families& families, const std::string& name) {
  const prometheus::ClientMetric::Histogram& h = families.at(name).metric.at(0).histogram;
  HistogramData out;
  uint64_t previous = 0;
  for (const auto& bucket : h.bucket) {
    if (!std::isinf(bucket.upper_bound)) out.upper_bounds.push_back(bucket.upper_bound);
    out.bucket_counts.push_back(bucket.cumulative_count - previous);
    previous = bucket.cumulative_count;
  }
  out.sum = h.sample_sum;
  out.observations = h.sample_count;
  EXPECT_EQ(previous, h.sample_count) << name << ": the +Inf bucket is the count";
  return out;
}

class ServingMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto metrics = ServingMetrics::Create(&collection_, {.model_name = "falcon-mamba-7b",
                                                         .version = "0.1.0",
                                                         .backend = "cuda",
                                                         .dtype = "bf16",
                                                         .max_model_len = 4096});
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = std::move(*metrics);
  }

  Collection collection_;
  std::unique_ptr<ServingMetrics> metrics_;
  FakeClock clock_;
};

TEST_F(ServingMetricsTest, VllmFamiliesHaveTheirTypesAndModelLabel) {
  const auto families = ByName(collection_);
  const std::map<std::string, prometheus::MetricType> expected = {
      {"vllm:prompt_tokens_total", prometheus::MetricType::Counter},
      {"vllm:generation_tokens_total", prometheus::MetricType::Counter},
      {"vllm:request_success_total", prometheus::MetricType::Counter},
      {"vllm:time_to_first_token_seconds", prometheus::MetricType::Histogram},
      {"vllm:inter_token_latency_seconds", prometheus::MetricType::Histogram},
      {"vllm:time_per_output_token_seconds", prometheus::MetricType::Histogram},
      {"vllm:e2e_request_latency_seconds", prometheus::MetricType::Histogram},
      {"vllm:request_queue_time_seconds", prometheus::MetricType::Histogram},
      {"vllm:request_inference_time_seconds", prometheus::MetricType::Histogram},
      {"vllm:request_prefill_time_seconds", prometheus::MetricType::Histogram},
      {"vllm:request_decode_time_seconds", prometheus::MetricType::Histogram},
      {"vllm:request_prompt_tokens", prometheus::MetricType::Histogram},
      {"vllm:request_generation_tokens", prometheus::MetricType::Histogram},
      {"mambaserve_build_info", prometheus::MetricType::Gauge},
  };
  for (const auto& [name, type] : expected) {
    ASSERT_TRUE(families.count(name)) << name;
    EXPECT_EQ(families.at(name).type, type) << name;
    for (const prometheus::ClientMetric& s : families.at(name).metric) {
      EXPECT_TRUE(HasLabel(s, "model_name", "falcon-mamba-7b")) << name;
    }
  }
  // The three finish reasons exist from the start, at zero, like vLLM's.
  EXPECT_EQ(families.at("vllm:request_success_total").metric.size(), 3u);
  EXPECT_EQ(Value(families, "vllm:request_success_total", "finished_reason", "abort"), 0);
  // Engine families are absent until a source is set.
  EXPECT_FALSE(families.count("vllm:num_requests_running"));
}

TEST_F(ServingMetricsTest, BucketsAreVllms) {
  const auto families = ByName(collection_);
  EXPECT_EQ(Hist(families, "vllm:time_to_first_token_seconds").upper_bounds.size(), 22u);
  EXPECT_EQ(Hist(families, "vllm:inter_token_latency_seconds").upper_bounds.size(), 19u);
  EXPECT_EQ(Hist(families, "vllm:e2e_request_latency_seconds").upper_bounds.size(), 21u);
  EXPECT_EQ(Hist(families, "vllm:request_prompt_tokens").upper_bounds,
            (std::vector<double>{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}));
  // prometheus-cpp writes bounds as `le="2560"` (Python's client: `le="2560.0"`); Prometheus
  // parses both as the same number, so histogram_quantile is unaffected.
  const std::string text = collection_.Serialize();
  EXPECT_THAT(text, HasSubstr("vllm:time_to_first_token_seconds_bucket{model_name=\"falcon-mamba-"
                              "7b\",le=\"2560\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("vllm:e2e_request_latency_seconds_bucket{model_name=\"falcon-mamba-"
                              "7b\",le=\"7680\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("vllm:time_to_first_token_seconds_bucket{model_name=\"falcon-mamba-"
                              "7b\",le=\"+Inf\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("mambaserve_build_info{backend=\"cuda\",dtype=\"bf16\","
                              "model_name=\"falcon-mamba-7b\",version=\"0.1.0\"} 1\n"));
}

TEST_F(ServingMetricsTest, RequestTimerReportsEveryPhase) {
  {
    RequestTimer timer(metrics_.get(), /*prompt_tokens=*/120, clock_.clock());
    clock_.Advance(0.5);  // queued
    timer.Scheduled();
    clock_.Advance(0.25);  // prefill
    timer.Tokens();
    for (int i = 0; i < 9; ++i) {
      clock_.Advance(0.02);
      timer.Tokens();
    }
    clock_.Advance(0.06);
    timer.Tokens(3);  // three tokens in one event: 0.02 s each
    timer.Finish(FinishReason::kLength);
    timer.Finish(FinishReason::kStop);  // ignored
  }
  const auto f = ByName(collection_);
  EXPECT_EQ(Value(f, "vllm:prompt_tokens_total"), 120);
  EXPECT_EQ(Value(f, "vllm:generation_tokens_total"), 13);
  EXPECT_EQ(Value(f, "vllm:request_success_total", "finished_reason", "length"), 1);
  EXPECT_EQ(Value(f, "vllm:request_success_total", "finished_reason", "stop"), 0);

  const HistogramData ttft = Hist(f, "vllm:time_to_first_token_seconds");
  EXPECT_EQ(ttft.count(), 1u);
  EXPECT_NEAR(ttft.sum, 0.75, 1e-9);  // queue + prefill
  const HistogramData itl = Hist(f, "vllm:inter_token_latency_seconds");
  EXPECT_EQ(itl.count(), 12u);
  EXPECT_NEAR(itl.sum, 0.24, 1e-9);
  EXPECT_EQ(itl.bucket_counts[1], 12u);  // 0.02 falls in (0.01, 0.025]
  const HistogramData tpot = Hist(f, "vllm:time_per_output_token_seconds");
  EXPECT_EQ(tpot.bucket_counts, itl.bucket_counts);
  EXPECT_NEAR(Hist(f, "vllm:request_queue_time_seconds").sum, 0.5, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:request_prefill_time_seconds").sum, 0.25, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:request_decode_time_seconds").sum, 0.24, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:request_inference_time_seconds").sum, 0.49, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:e2e_request_latency_seconds").sum, 0.99, 1e-9);
  EXPECT_EQ(Hist(f, "vllm:request_prompt_tokens").sum, 120);
  EXPECT_EQ(Hist(f, "vllm:request_generation_tokens").sum, 13);
}

TEST_F(ServingMetricsTest, QueueTimeReportedWithTheFinalEvent) {
  {
    RequestTimer timer(metrics_.get(), 10, clock_.clock());
    clock_.Advance(0.4);
    timer.Tokens();  // first token at 0.4 s: queue time not known yet
    clock_.Advance(0.1);
    timer.Tokens();
    timer.ScheduledAfter(0.3);  // the scheduler says: admitted 0.3 s after arrival
    timer.Finish(FinishReason::kStop);
  }
  const auto f = ByName(collection_);
  EXPECT_NEAR(Hist(f, "vllm:request_queue_time_seconds").sum, 0.3, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:request_prefill_time_seconds").sum, 0.1, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:request_decode_time_seconds").sum, 0.1, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:time_to_first_token_seconds").sum, 0.4, 1e-9);
  EXPECT_EQ(Value(f, "vllm:prompt_tokens_total"), 10);
}

TEST_F(ServingMetricsTest, DroppedTimerCountsAsAbortAndQueuedPromptIsNotCounted) {
  {
    RequestTimer never_scheduled(metrics_.get(), 50, clock_.clock());
    clock_.Advance(2);
  }
  {
    RequestTimer cut_in_prefill(metrics_.get(), 70, clock_.clock());
    clock_.Advance(1);
    cut_in_prefill.Scheduled();
    clock_.Advance(1);
  }
  const auto f = ByName(collection_);
  EXPECT_EQ(Value(f, "vllm:request_success_total", "finished_reason", "abort"), 2);
  EXPECT_EQ(Value(f, "vllm:prompt_tokens_total"), 70);
  EXPECT_EQ(Value(f, "vllm:generation_tokens_total"), 0);
  EXPECT_NEAR(Hist(f, "vllm:request_queue_time_seconds").sum, 3, 1e-9);
  EXPECT_NEAR(Hist(f, "vllm:request_prefill_time_seconds").sum, 1, 1e-9);
  EXPECT_EQ(Hist(f, "vllm:time_to_first_token_seconds").count(), 0u);
}

TEST_F(ServingMetricsTest, RejectionsAndGrpcCodesAreBounded) {
  metrics_->RequestAdmitted();
  metrics_->RequestRejected("queue_full");
  metrics_->RequestRejected("queue_full");
  for (int i = 0; i < 100; ++i) metrics_->RequestRejected("reason_" + std::to_string(i));
  metrics_->GrpcCallCompleted("Generate", 0);
  metrics_->GrpcCallCompleted("Generate", 8);
  metrics_->GrpcCallCompleted("Generate", 99);
  const auto f = ByName(collection_);
  EXPECT_EQ(Value(f, "mambaserve_requests_admitted_total"), 1);
  EXPECT_EQ(Value(f, "mambaserve_admission_rejections_total", "reason", "queue_full"), 2);
  EXPECT_LE(f.at("mambaserve_admission_rejections_total").metric.size(), 17u);
  EXPECT_EQ(Value(f, "mambaserve_grpc_requests_total", "code", "RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(Value(f, "mambaserve_grpc_requests_total", "code", "UNKNOWN"), 1);
  EXPECT_EQ(GrpcCodeName(16), "UNAUTHENTICATED");
  // 16 reasons fit (queue_full and reason_0..14); the other 85 merged into one series.
  EXPECT_EQ(Value(f, "mambaserve_admission_rejections_total", "reason", "__overflow__"), 85);
  EXPECT_EQ(Value(f, "mambaserve_metric_label_overflow_total", "metric",
                  "mambaserve_admission_rejections_total"),
            85);
  EXPECT_EQ(Value(f, "mambaserve_metric_label_overflow_total", "metric",
                  "mambaserve_grpc_requests_total"),
            0);
}

TEST_F(ServingMetricsTest, EngineSnapshotIsReadAtScrapeTime) {
  EngineStats stats;
  stats.requests_running = 5;
  stats.requests_waiting = 2;
  stats.slots_total = 8;
  stats.slots_active = 5;
  stats.slots_idle_resident = 1;
  stats.sessions_parked_on_host = 4;
  stats.state_bytes_per_session = 1000;
  stats.state_pool_bytes = 8000;
  stats.device_memory_used_bytes = 123;
  stats.device_memory_total_bytes = 456;
  stats.sessions_created = 10;
  stats.sessions_evicted = 3;
  stats.sessions_live = 9;
  stats.state_host_bytes = 3900;  // the engine's own count wins over parked x per-session
  metrics_->SetEngineStatsSource(std::make_shared<FixedSource>(stats));

  const auto f = ByName(collection_);
  EXPECT_EQ(Value(f, "vllm:num_requests_running"), 5);
  EXPECT_EQ(Value(f, "vllm:num_requests_waiting"), 2);
  EXPECT_DOUBLE_EQ(Value(f, "vllm:kv_cache_usage_perc"), 0.75);
  EXPECT_DOUBLE_EQ(Value(f, "vllm:gpu_cache_usage_perc"), 0.75);
  EXPECT_EQ(Value(f, "mambaserve_state_slots_capacity"), 8);
  EXPECT_EQ(Value(f, "mambaserve_state_slots", "state", "active"), 5);
  EXPECT_EQ(Value(f, "mambaserve_state_slots", "state", "idle_resident"), 1);
  EXPECT_EQ(Value(f, "mambaserve_state_slots", "state", "free"), 2);
  EXPECT_EQ(Value(f, "mambaserve_sessions_parked_on_host"), 4);
  EXPECT_EQ(Value(f, "mambaserve_state_memory_bytes", "location", "device"), 6000);
  EXPECT_EQ(Value(f, "mambaserve_state_memory_bytes", "location", "host"), 3900);
  EXPECT_EQ(Value(f, "mambaserve_sessions"), 9);
  EXPECT_EQ(Value(f, "mambaserve_device_memory_used_bytes"), 123);
  EXPECT_EQ(Value(f, "mambaserve_session_events_total", "event", "created"), 10);
  EXPECT_EQ(Value(f, "mambaserve_session_events_total", "event", "evicted"), 3);
  EXPECT_EQ(f.at("mambaserve_session_events_total").type, prometheus::MetricType::Counter);
  // Events the engine does not count (-1) are left out rather than exported as 0.
  EXPECT_EQ(f.at("mambaserve_session_events_total").metric.size(), 2u);

  // The prefix cache is off (-1): none of its series.
  EXPECT_FALSE(f.count("mambaserve_prefix_cache_lookups_total"));
  stats.prefix_cache_hits = 7;
  stats.prefix_cache_misses = 2;
  stats.prefix_cache_saved_tokens = 1792;
  stats.prefix_cache_bytes = 5000;
  stats.prefix_cache_entries = 3;
  metrics_->SetEngineStatsSource(std::make_shared<FixedSource>(stats));
  const auto cached = ByName(collection_);
  EXPECT_EQ(Value(cached, "mambaserve_prefix_cache_lookups_total", "result", "hit"), 7);
  EXPECT_EQ(Value(cached, "mambaserve_prefix_cache_lookups_total", "result", "miss"), 2);
  EXPECT_EQ(cached.at("mambaserve_prefix_cache_lookups_total").type,
            prometheus::MetricType::Counter);
  EXPECT_EQ(Value(cached, "mambaserve_prefix_cache_saved_prompt_tokens_total"), 1792);
  EXPECT_EQ(cached.at("mambaserve_prefix_cache_saved_prompt_tokens_total").type,
            prometheus::MetricType::Counter);
  EXPECT_EQ(Value(cached, "mambaserve_prefix_cache_bytes"), 5000);
  EXPECT_EQ(Value(cached, "mambaserve_prefix_cache_entries"), 3);

  // Without a session store (-1): none of its series; with one, each counter and the gauge.
  EXPECT_FALSE(cached.count("mambaserve_session_store_writes_total"));
  stats.session_store_loads = 4;
  stats.session_store_writes = 11;
  stats.session_store_written_bytes = 11 << 20;
  stats.session_store_write_seconds = 0.25;
  stats.session_store_lease_conflicts = 2;
  stats.session_store_errors = 5;
  stats.session_store_unstored_sessions = 1;
  metrics_->SetEngineStatsSource(std::make_shared<FixedSource>(stats));
  const auto stored = ByName(collection_);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_loads_total"), 4);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_writes_total"), 11);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_written_bytes_total"), 11 << 20);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_write_seconds_total"), 0.25);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_lease_conflicts_total"), 2);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_errors_total"), 5);
  EXPECT_EQ(stored.at("mambaserve_session_store_errors_total").type,
            prometheus::MetricType::Counter);
  EXPECT_EQ(Value(stored, "mambaserve_session_store_unstored_sessions"), 1);
  EXPECT_EQ(stored.at("mambaserve_session_store_unstored_sessions").type,
            prometheus::MetricType::Gauge);

  metrics_->SetEngineStatsSource(nullptr);
  EXPECT_FALSE(ByName(collection_).count("vllm:num_requests_running"));
}

TEST_F(ServingMetricsTest, ManyTokensAtOnceAreEachObserved) {
  metrics_->NextTokens(3, 0.06);  // observed one by one
  metrics_->NextTokens(40, 0.8);  // observed in one call
  const auto f = ByName(collection_);
  for (const char* name :
       {"vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"}) {
    const HistogramData h = Hist(f, name);
    EXPECT_EQ(h.count(), 43u) << name;
    EXPECT_EQ(h.bucket_counts[1], 43u) << name;  // 0.02 s each: (0.01, 0.025]
    EXPECT_NEAR(h.sum, 0.86, 1e-9) << name;
  }
  EXPECT_EQ(Value(f, "vllm:generation_tokens_total"), 43);
}

TEST_F(ServingMetricsTest, StepHistograms) {
  metrics_->StepCompleted(5, 300, 0.004);
  metrics_->StepCompleted(64, 64, 0.03);
  const auto f = ByName(collection_);
  const HistogramData batch = Hist(f, "mambaserve_scheduler_step_batch_size");
  EXPECT_EQ(batch.count(), 2u);
  EXPECT_EQ(batch.bucket_counts[3], 1u);  // 5 in (4, 8]
  EXPECT_EQ(batch.bucket_counts[6], 1u);  // 64 in (32, 64]
  EXPECT_EQ(Hist(f, "mambaserve_scheduler_step_tokens").sum, 364);
  EXPECT_NEAR(Hist(f, "mambaserve_scheduler_step_duration_seconds").sum, 0.034, 1e-12);
}

TEST_F(ServingMetricsTest, CpuBackendHasNoDeviceMemorySeries) {
  metrics_->SetEngineStatsSource(std::make_shared<FixedSource>(EngineStats{}));
  const auto f = ByName(collection_);
  EXPECT_FALSE(f.count("mambaserve_device_memory_used_bytes"));
  EXPECT_DOUBLE_EQ(Value(f, "vllm:kv_cache_usage_perc"), 0);  // no slots: 0, not NaN
  EXPECT_FALSE(f.count("mambaserve_sessions"));
}

TEST(ServingMetricsCreateTest, TwoFacadesCannotShareACollection) {
  Collection collection;
  ASSERT_TRUE(ServingMetrics::Create(&collection, {}).ok());
  EXPECT_FALSE(ServingMetrics::Create(&collection, {}).ok());
  Collection other;
  ServingMetricsOptions options;
  options.max_model_len = 0;
  EXPECT_FALSE(ServingMetrics::Create(&other, options).ok());
}

}  // namespace
}  // namespace mambaserve::metrics
