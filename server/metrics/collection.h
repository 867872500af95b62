// Everything one /metrics scrape returns: the families this process updates (a prometheus-cpp
// Registry: counters, gauges and histograms on the request and scheduler paths) and collectors
// computed at scrape time (the engine's published snapshot, /proc/self). A Collection is itself a
// prometheus::Collectable, so the endpoint registers it once and collectors added later (the
// engine's, once the model has loaded) are scraped too.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace mambaserve::metrics {

class Collection final : public prometheus::Collectable {
 public:
  Collection();
  Collection(const Collection&) = delete;
  Collection& operator=(const Collection&) = delete;

  // Registering a name twice throws (InsertBehavior::Throw), so two facades cannot silently share
  // one family.
  prometheus::Registry& registry() { return *registry_; }

  // mambaserve_metric_label_overflow_total{metric=...}: label combinations a capped family merged
  // into its __overflow__ series (see capped_family.h).
  prometheus::Family<prometheus::Counter>& label_overflow() { return *label_overflow_; }

  // Runs on every scrape, outside any lock this class holds. It must be fast and must never wait
  // on the scheduler thread.
  void AddCollector(std::shared_ptr<const prometheus::Collectable> collector);

  // Owned families in registration order, then the collectors' in the order they were added.
  std::vector<prometheus::MetricFamily> Collect() const override;
  // The text exposition format (0.0.4), as the endpoint serves it.
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* label_overflow_;

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const prometheus::Collectable>> collectors_;  // guarded by mu_
};

}  // namespace mambaserve::metrics
