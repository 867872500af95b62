// Owns metric families and scrape-time collectors and renders them all as one exposition.
// Registering is done once at start-up; Collect()/Serialize() may run on any thread at any time and
// never wait on the code that updates the metrics (families take only their own short mutex, and
// collectors must read published snapshots, never a lock held by the scheduler).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/metrics/counter.h"
#include "server/metrics/family.h"
#include "server/metrics/histogram.h"
#include "server/metrics/metric_family.h"

namespace mambaserve::metrics {

inline constexpr size_t kDefaultMaxSeries = 128;

class Registry {
 public:
  // Fills `out` with families computed at scrape time. Must be fast and must not block.
  using Collector = std::function<void(std::vector<FamilySnapshot>* out)>;

  Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Counter names must end in "_total" (the exposition name; vLLM's prometheus_client does the
  // same). Names must be unique, including against a histogram's _bucket/_sum/_count series.
  absl::StatusOr<Family<Counter>*> AddCounter(const std::string& name, const std::string& help,
                                              std::vector<std::string> label_names,
                                              size_t max_series = kDefaultMaxSeries);
  absl::StatusOr<Family<Gauge>*> AddGauge(const std::string& name, const std::string& help,
                                          std::vector<std::string> label_names,
                                          size_t max_series = kDefaultMaxSeries);
  absl::StatusOr<Family<Histogram>*> AddHistogram(const std::string& name, const std::string& help,
                                                  std::vector<std::string> label_names,
                                                  std::vector<double> upper_bounds,
                                                  size_t max_series = kDefaultMaxSeries);
  void AddCollector(Collector collector);

  // Owned families in registration order, then collectors' families, then
  // mambaserve_metric_label_overflow_total for families that merged series. Collector families
  // with an invalid or already-used name are dropped (and counted) rather than break the scrape.
  std::vector<FamilySnapshot> Collect() const;
  std::string Serialize() const;

 private:
  absl::Status Reserve(const std::string& name, MetricType type,
                       const std::vector<std::string>& label_names);

  mutable std::mutex mu_;
  std::set<std::string> names_;                         // every exposed series name; guarded by mu_
  std::vector<std::unique_ptr<Collectable>> families_;  // guarded by mu_
  std::vector<Collector> collectors_;                   // guarded by mu_
  mutable std::atomic<uint64_t> dropped_collector_families_{0};
};

}  // namespace mambaserve::metrics
