// A labeled family of metrics of one kind, with a bound on how many label combinations it holds.
// Children live as long as the family and are never moved, so callers may cache the references the
// hot path uses; looking one up takes a short mutex. Past `max_series` distinct combinations, new
// combinations merge into one overflow series whose label values are all kOverflowLabelValue, so a
// bug that puts an unbounded value into a label cannot grow memory or the scrape without bound.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/metrics/counter.h"
#include "server/metrics/histogram.h"
#include "server/metrics/metric_family.h"

namespace mambaserve::metrics {

inline constexpr std::string_view kOverflowLabelValue = "__overflow__";

// The type-independent part, so the registry can hold families of every kind in one list.
class Collectable {
 public:
  virtual ~Collectable() = default;
  virtual void Collect(std::vector<FamilySnapshot>* out) const = 0;
  virtual const std::string& name() const = 0;
  // Label combinations that were merged into the overflow series.
  virtual uint64_t overflowed() const = 0;
};

template <typename T>
class Family final : public Collectable {
 public:
  using Factory = std::function<std::unique_ptr<T>()>;

  Family(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
         size_t max_series, Factory factory)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        label_names_(std::move(label_names)),
        max_series_(max_series),
        factory_(std::move(factory)) {}

  // The child for these label values, in label-name order. A wrong number of values is a caller
  // bug; it lands in the overflow series rather than crashing the server.
  T& WithLabels(const std::vector<std::string_view>& values) {
    std::lock_guard<std::mutex> lock(mu_);
    if (values.size() == label_names_.size()) {
      std::vector<std::string> key(values.begin(), values.end());
      auto it = children_.find(key);
      if (it != children_.end()) return *it->second;
      if (children_.size() < max_series_) {
        auto [inserted, unused] = children_.emplace(std::move(key), factory_());
        return *inserted->second;
      }
    }
    overflowed_.fetch_add(1, std::memory_order_relaxed);
    if (overflow_ == nullptr) overflow_ = factory_();
    return *overflow_;
  }
  T& WithLabels(std::initializer_list<std::string_view> values) {
    return WithLabels(std::vector<std::string_view>(values));
  }

  void Collect(std::vector<FamilySnapshot>* out) const override {
    FamilySnapshot family{name_, help_, type_, {}};
    std::lock_guard<std::mutex> lock(mu_);
    family.samples.reserve(children_.size() + 1);
    for (const auto& [values, child] : children_) {
      family.samples.push_back(SampleOf(values, *child));
    }
    if (overflow_ != nullptr) {
      family.samples.push_back(
          SampleOf(std::vector<std::string>(label_names_.size(), std::string(kOverflowLabelValue)),
                   *overflow_));
    }
    out->push_back(std::move(family));
  }

  const std::string& name() const override { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  uint64_t overflowed() const override { return overflowed_.load(std::memory_order_relaxed); }

 private:
  Sample SampleOf(const std::vector<std::string>& values, const T& child) const {
    Sample sample;
    for (size_t i = 0; i < label_names_.size(); ++i) {
      sample.labels.emplace_back(label_names_[i], values[i]);
    }
    if constexpr (std::is_same_v<T, Histogram>) {
      sample.histogram = child.Snapshot();
    } else {
      sample.value = child.value();
    }
    return sample;
  }

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  const size_t max_series_;
  const Factory factory_;

  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;  // guarded by mu_
  std::unique_ptr<T> overflow_;                                      // guarded by mu_
  std::atomic<uint64_t> overflowed_{0};
};

}  // namespace mambaserve::metrics
