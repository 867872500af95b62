#include "server/serving_metrics_adapter.h"

#include <string_view>

namespace mambaserve {
namespace {

class GrpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  GrpcMetricsInterceptor(metrics::ServingMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->GrpcCallCompleted(method_, static_cast<int>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  metrics::ServingMetrics* metrics_;
  const std::string method_;
};

}  // namespace

metrics::EngineStats EngineStatsFrom(const SchedulerStats& stats, const BackendInfo& backend) {
  metrics::EngineStats out;
  out.requests_running = stats.running;
  out.requests_waiting = stats.waiting;
  out.slots_total = stats.slots_total;
  out.slots_active = stats.slots_in_use;
  out.slots_idle_resident = stats.slots_idle;
  out.sessions_live = stats.sessions;
  out.sessions_parked_on_host = stats.sessions_parked;
  out.state_host_bytes = stats.parked_bytes;
  out.state_bytes_per_session = backend.state_bytes_per_slot;
  out.state_pool_bytes = backend.state_pool_bytes;
  if (backend.device_memory_total > 0) {
    out.device_memory_total_bytes = backend.device_memory_total;
    // Everything the backend allocates up front; it does not grow while serving.
    out.device_memory_used_bytes = backend.weight_bytes + backend.state_pool_bytes;
  }
  out.sessions_parked = stats.sessions_parked_total;
  out.sessions_restored = stats.sessions_restored_total;
  out.sessions_evicted = stats.sessions_evicted_total;
  out.sessions_expired = stats.sessions_expired_total;
  if (stats.prefix_cache_budget_bytes > 0) {
    out.prefix_cache_hits = stats.prefix_cache_hits;
    out.prefix_cache_misses = stats.prefix_cache_misses;
    out.prefix_cache_saved_tokens = stats.prefix_cache_saved_tokens;
    out.prefix_cache_bytes = stats.prefix_cache_bytes;
    out.prefix_cache_entries = stats.prefix_cache_entries;
  }
  return out;
}

metrics::FinishReason MetricsFinishReason(FinishReason reason, bool failed) {
  if (failed) return metrics::FinishReason::kAbort;
  switch (reason) {
    case FinishReason::kLength:
      return metrics::FinishReason::kLength;
    case FinishReason::kStop:
    case FinishReason::kEos:
      return metrics::FinishReason::kStop;
    case FinishReason::kNone:
    case FinishReason::kCancelled:
      break;
  }
  return metrics::FinishReason::kAbort;
}

void AddSessionStoreStats(const SessionStoreStats& store, metrics::EngineStats* out) {
  out->session_store_loads = store.loads;
  out->session_store_writes = store.writes;
  out->session_store_written_bytes = store.write_bytes;
  out->session_store_write_seconds = store.write_seconds;
  out->session_store_lease_conflicts = store.lease_conflicts;
  out->session_store_errors = store.errors;
  out->session_store_unstored_sessions = store.unstored_sessions;
}

metrics::EngineStats SchedulerStatsSource::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (engine_ == nullptr) return metrics::EngineStats{};
  metrics::EngineStats out = EngineStatsFrom(engine_->stats().Snapshot(), engine_->info().backend);
  if (std::optional<SessionStoreStats> store = engine_->session_store_stats()) {
    AddSessionStoreStats(*store, &out);
  }
  return out;
}

void SchedulerStatsSource::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  engine_ = nullptr;
}

grpc::experimental::Interceptor* GrpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  metrics::ServingMetrics* metrics = metrics_->load(std::memory_order_acquire);
  if (metrics == nullptr) return nullptr;  // gRPC skips a null interceptor
  std::string_view method = info->method() != nullptr ? info->method() : "unknown";
  if (!method.empty() && method.front() == '/') method.remove_prefix(1);
  return new GrpcMetricsInterceptor(metrics, std::string(method));
}

}  // namespace mambaserve
