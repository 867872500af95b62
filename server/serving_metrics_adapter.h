// Glue between the serving process and server/metrics: the scheduler's published stats as the
// metrics' EngineStatsSource, engine finish reasons as vLLM label values, and a gRPC server
// interceptor that counts every completed call by method and status code.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/serving/generation.h"
#include "engine/serving/scheduler_stats.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/metrics/serving_metrics.h"

namespace mambaserve {

metrics::EngineStats EngineStatsFrom(const SchedulerStats& stats, const BackendInfo& backend);
void AddSessionStoreStats(const SessionStoreStats& store, metrics::EngineStats* out);

// eos/stop -> "stop", length -> "length", cancelled or failed -> "abort" (vLLM's values).
metrics::FinishReason MetricsFinishReason(FinishReason reason, bool failed);

// Reads the scheduler's last published snapshot (a copy under the publisher's short mutex; never
// waits for a step) and the session store's counters. Detach() before the engine goes away; later
// scrapes see no engine.
class SchedulerStatsSource final : public metrics::EngineStatsSource {
 public:
  explicit SchedulerStatsSource(const Engine* engine) : engine_(engine) {}
  metrics::EngineStats Snapshot() const override;
  void Detach();

 private:
  mutable std::mutex mu_;
  const Engine* engine_;  // guarded by mu_; null once detached
};

// Counts each RPC's final status in ServingMetrics::GrpcCallCompleted, with the method as
// "package.Service/Method". Calls made before `metrics` is set are not counted.
class GrpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GrpcMetricsInterceptorFactory(const std::atomic<metrics::ServingMetrics*>* metrics)
      : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  const std::atomic<metrics::ServingMetrics*>* metrics_;
};

}  // namespace mambaserve
