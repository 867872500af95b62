// The serving metrics of one mambaserve process: vLLM-compatible series (same names, types, units,
// buckets and `model_name` label, so existing vLLM dashboards work) and mambaserve's own.
//
// The feeds, none of which can block the scheduler:
//  - the request path calls the event methods below (prometheus-cpp counters are atomics, its
//    histograms take one short uncontended mutex per observation; a labelled family's lookup takes
//    another);
//  - engine state (running/waiting, slots, sessions) is read at scrape time from an
//    EngineStatsSource that returns the scheduler's last published snapshot;
//  - the scheduler thread reports each step with StepCompleted(): three histogram observations, no
//    allocation (bench/metrics_bench measures it against a step).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "server/metrics/capped_family.h"
#include "server/metrics/collection.h"
#include "server/metrics/engine_stats.h"

namespace mambaserve::metrics {

// vLLM's finished_reason label values.
enum class FinishReason {
  kStop,    // EOS or a stop sequence
  kLength,  // max_tokens (or the session's length limit)
  kAbort,   // cancelled by the client, deadline exceeded, or failed
};
std::string_view FinishReasonLabel(FinishReason reason);

// gRPC status code number -> canonical name ("OK", "RESOURCE_EXHAUSTED", ...); "UNKNOWN" if out of
// range. Kept here so the metrics library does not depend on gRPC.
std::string_view GrpcCodeName(int code);

struct FinishedRequest {
  FinishReason reason = FinishReason::kStop;
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  double queue_seconds = 0;    // arrival -> scheduled
  double prefill_seconds = 0;  // scheduled -> first token
  double decode_seconds = 0;   // first token -> finish
  double e2e_seconds = 0;      // arrival -> finish
};

struct ServingMetricsOptions {
  std::string model_name = "mamba";
  // mambaserve_build_info labels.
  std::string version;
  std::string backend;  // "cpu" | "cuda"
  std::string dtype;    // weight dtype, e.g. "bf16"
  // Upper end of the per-request token-count histograms (vLLM uses max_model_len; a Mamba model has
  // none, so this is a choice). Buckets are 1, 2, 5, 10, ... up to it.
  int64_t max_model_len = 1000000;
};

// vLLM's bucket bounds (vllm/v1/metrics/loggers.py).
const std::vector<double>& TimeToFirstTokenBuckets();
const std::vector<double>& InterTokenLatencyBuckets();  // also time_per_output_token
const std::vector<double>& RequestLatencyBuckets();     // e2e, queue, inference, prefill, decode
// mambaserve's scheduler-step buckets.
const std::vector<double>& StepBatchSizeBuckets();
const std::vector<double>& StepTokensBuckets();
const std::vector<double>& StepDurationBuckets();
// 1, 2, 5, 10, 20, 50, ... up to and including `max_value` (vLLM's token-count buckets).
std::vector<double> OneTwoFiveBuckets(double max_value);

class EngineCollector;

class ServingMetrics {
 public:
  // Registers every family in `collection` (which must outlive this object); fails if they are
  // registered there already.
  static absl::StatusOr<std::unique_ptr<ServingMetrics>> Create(
      Collection* collection, const ServingMetricsOptions& options);

  // The engine snapshot the scrape reads; until one is set the engine families are left out.
  void SetEngineStatsSource(std::shared_ptr<const EngineStatsSource> source);

  // Request events, callable from any thread.
  void RequestAdmitted();
  void RequestRejected(std::string_view reason);  // e.g. "queue_full", "session_busy"
  void PromptTokensProcessed(int64_t tokens);
  void FirstToken(double ttft_seconds);  // counts the first generated token too
  // `n` more tokens arrived `seconds_since_previous` after the previous one(s); n > 1 means they
  // came together, so each gets an inter-token latency of seconds_since_previous / n.
  void NextTokens(int64_t n, double seconds_since_previous);
  void RequestFinished(const FinishedRequest& request);
  void GrpcCallCompleted(std::string_view method, int code);

  // One scheduler step: sequences in it, tokens fed (prefill + decode), wall time.
  void StepCompleted(int64_t batch_size, int64_t tokens, double seconds);

  const std::string& model_name() const { return options_.model_name; }

 private:
  explicit ServingMetrics(const ServingMetricsOptions& options) : options_(options) {}
  void Register(Collection* collection);  // throws what prometheus-cpp throws

  const ServingMetricsOptions options_;
  std::vector<double> token_buckets_;

  prometheus::Counter* prompt_tokens_ = nullptr;
  prometheus::Counter* generation_tokens_ = nullptr;
  prometheus::Counter* success_[3] = {nullptr, nullptr, nullptr};  // by FinishReason
  prometheus::Histogram* ttft_ = nullptr;
  prometheus::Histogram* inter_token_ = nullptr;
  prometheus::Histogram* time_per_output_token_ = nullptr;
  prometheus::Histogram* e2e_ = nullptr;
  prometheus::Histogram* queue_ = nullptr;
  prometheus::Histogram* inference_ = nullptr;
  prometheus::Histogram* prefill_ = nullptr;
  prometheus::Histogram* decode_ = nullptr;
  prometheus::Histogram* prompt_tokens_per_request_ = nullptr;
  prometheus::Histogram* generation_tokens_per_request_ = nullptr;
  prometheus::Counter* admitted_ = nullptr;
  std::unique_ptr<CappedFamily<prometheus::Counter>> rejections_;
  std::unique_ptr<CappedFamily<prometheus::Counter>> grpc_requests_;
  prometheus::Histogram* step_batch_size_ = nullptr;
  prometheus::Histogram* step_tokens_ = nullptr;
  prometheus::Histogram* step_duration_ = nullptr;

  std::shared_ptr<EngineCollector> engine_;  // also held by the collection
};

// Times one request and reports its events to ServingMetrics. Owned by the request; used by one
// thread at a time. If destroyed before Finish(), the request counts as aborted.
class RequestTimer {
 public:
  using Clock = std::function<double()>;  // monotonic seconds
  static double SteadySeconds();

  RequestTimer(ServingMetrics* metrics, int64_t prompt_tokens, Clock clock = &SteadySeconds);
  ~RequestTimer();
  RequestTimer(const RequestTimer&) = delete;
  RequestTimer& operator=(const RequestTimer&) = delete;

  void Scheduled();  // left the waiting queue; prefill starts
  // The same, reported late: the request left the queue `queue_seconds` after it arrived (the
  // scheduler tells the queue time with the final event). Call before Finish().
  void ScheduledAfter(double queue_seconds);
  void Tokens(int64_t n = 1);        // n generated tokens became available
  void Finish(FinishReason reason);  // only the first call counts
  // The request was refused before admission: it is no finished request (nothing is recorded).
  void Discard() { finished_ = true; }

  int64_t generated() const { return generated_; }

 private:
  ServingMetrics* metrics_;
  const int64_t prompt_tokens_;
  const Clock clock_;
  const double arrival_;
  double scheduled_ = -1;
  double first_token_ = -1;
  double last_token_ = -1;
  int64_t generated_ = 0;
  bool prompt_counted_ = false;
  bool finished_ = false;
};

}  // namespace mambaserve::metrics
