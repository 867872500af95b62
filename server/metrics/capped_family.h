// A prometheus-cpp family with a bound on how many label combinations it holds. Past `max_series`
// distinct combinations, new ones merge into one series whose label values are all "__overflow__"
// and are counted in mambaserve_metric_label_overflow_total{metric=NAME}, so a bug that puts an
// unbounded value (a session id, a peer address) into a label cannot grow memory or the scrape
// without bound. Children live as long as the family, so callers may keep the references the hot
// path uses; a lookup takes one short mutex.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "server/metrics/collection.h"

namespace mambaserve::metrics {

inline constexpr std::string_view kOverflowLabelValue = "__overflow__";

template <typename T>
class CappedFamily {
 public:
  // `family` must belong to `collection`. Histograms pass their bucket bounds.
  CappedFamily(Collection& collection, prometheus::Family<T>& family,
               std::vector<std::string> label_names, size_t max_series,
               std::vector<double> buckets = {})
      : family_(family),
        label_names_(std::move(label_names)),
        max_series_(max_series),
        buckets_(std::move(buckets)),
        overflowed_(collection.label_overflow().Add({{"metric", family.GetName()}})) {}

  // The child for these label values, in label-name order. A wrong number of values is a caller
  // bug; it lands in the overflow series rather than crashing the server.
  T& WithLabels(std::initializer_list<std::string_view> values) {
    std::lock_guard<std::mutex> lock(mu_);
    if (values.size() == label_names_.size()) {
      std::vector<std::string> key(values.begin(), values.end());
      if (auto it = children_.find(key); it != children_.end()) return *it->second;
      if (children_.size() < max_series_) {
        T& child = Add(key);
        children_.emplace(std::move(key), &child);
        return child;
      }
    }
    overflowed_.Increment();
    if (overflow_ == nullptr) {
      overflow_ =
          &Add(std::vector<std::string>(label_names_.size(), std::string(kOverflowLabelValue)));
    }
    return *overflow_;
  }

 private:
  T& Add(const std::vector<std::string>& values) {
    prometheus::Labels labels;
    for (size_t i = 0; i < label_names_.size(); ++i) labels.emplace(label_names_[i], values[i]);
    if constexpr (std::is_same_v<T, prometheus::Histogram>) {
      return family_.Add(labels, buckets_);
    } else {
      return family_.Add(labels);
    }
  }

  prometheus::Family<T>& family_;
  const std::vector<std::string> label_names_;
  const size_t max_series_;
  const std::vector<double> buckets_;
  prometheus::Counter& overflowed_;

  std::mutex mu_;
  std::map<std::vector<std::string>, T*> children_;  // guarded by mu_
  T* overflow_ = nullptr;                            // guarded by mu_
};

}  // namespace mambaserve::metrics
