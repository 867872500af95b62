#include "server/metrics/registry.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/metrics/text_format.h"

namespace mambaserve::metrics {
namespace {

std::vector<std::string> ExposedNames(const std::string& name, MetricType type) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

}  // namespace

Registry::Registry() = default;

absl::Status Registry::Reserve(const std::string& name, MetricType type,
                               const std::vector<std::string>& label_names) {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name \"", name, "\""));
  }
  if (type == MetricType::kCounter && !absl::EndsWith(name, "_total")) {
    return absl::InvalidArgumentError(absl::StrCat("counter \"", name, "\" must end in _total"));
  }
  std::set<std::string> seen;
  for (const std::string& label : label_names) {
    if (!IsValidLabelName(label)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric \"", name, "\": invalid label name \"", label, "\""));
    }
    if (!seen.insert(label).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric \"", name, "\": label \"", label, "\" repeated"));
    }
  }
  const std::vector<std::string> exposed = ExposedNames(name, type);
  for (const std::string& n : exposed) {
    if (names_.count(n)) {
      return absl::AlreadyExistsError(absl::StrCat("metric \"", n, "\" already registered"));
    }
  }
  names_.insert(exposed.begin(), exposed.end());
  return absl::OkStatus();
}

absl::StatusOr<Family<Counter>*> Registry::AddCounter(const std::string& name,
                                                      const std::string& help,
                                                      std::vector<std::string> label_names,
                                                      size_t max_series) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = Reserve(name, MetricType::kCounter, label_names); !s.ok()) return s;
  auto family =
      std::make_unique<Family<Counter>>(name, help, MetricType::kCounter, std::move(label_names),
                                        max_series, [] { return std::make_unique<Counter>(); });
  Family<Counter>* raw = family.get();
  families_.push_back(std::move(family));
  return raw;
}

absl::StatusOr<Family<Gauge>*> Registry::AddGauge(const std::string& name, const std::string& help,
                                                  std::vector<std::string> label_names,
                                                  size_t max_series) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = Reserve(name, MetricType::kGauge, label_names); !s.ok()) return s;
  auto family =
      std::make_unique<Family<Gauge>>(name, help, MetricType::kGauge, std::move(label_names),
                                      max_series, [] { return std::make_unique<Gauge>(); });
  Family<Gauge>* raw = family.get();
  families_.push_back(std::move(family));
  return raw;
}

absl::StatusOr<Family<Histogram>*> Registry::AddHistogram(const std::string& name,
                                                          const std::string& help,
                                                          std::vector<std::string> label_names,
                                                          std::vector<double> upper_bounds,
                                                          size_t max_series) {
  if (absl::Status s = ValidateBuckets(upper_bounds); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("metric \"", name, "\": ", s.message()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = Reserve(name, MetricType::kHistogram, label_names); !s.ok()) return s;
  auto family = std::make_unique<Family<Histogram>>(
      name, help, MetricType::kHistogram, std::move(label_names), max_series,
      [bounds = std::move(upper_bounds)] { return std::make_unique<Histogram>(bounds); });
  Family<Histogram>* raw = family.get();
  families_.push_back(std::move(family));
  return raw;
}

void Registry::AddCollector(Collector collector) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::vector<FamilySnapshot> Registry::Collect() const {
  std::vector<FamilySnapshot> out;
  FamilySnapshot overflow{"mambaserve_metric_label_overflow_total",
                          "Label combinations merged into the __overflow__ series because a "
                          "family reached its series cap.",
                          MetricType::kCounter,
                          {}};
  std::vector<Collector> collectors;
  std::set<std::string> used;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& family : families_) {
      family->Collect(&out);
      if (const uint64_t n = family->overflowed(); n > 0) {
        overflow.samples.push_back({{{"metric", family->name()}}, static_cast<double>(n), {}});
      }
    }
    collectors = collectors_;
    used = names_;
  }
  // Collectors run outside the registry lock: they read engine snapshots and /proc.
  for (const Collector& collector : collectors) {
    std::vector<FamilySnapshot> produced;
    collector(&produced);
    for (FamilySnapshot& family : produced) {
      bool ok = IsValidMetricName(family.name);
      for (const std::string& n : ExposedNames(family.name, family.type)) {
        ok = ok && used.insert(n).second;
      }
      if (!ok) {
        dropped_collector_families_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      out.push_back(std::move(family));
    }
  }
  if (const uint64_t dropped = dropped_collector_families_.load(std::memory_order_relaxed)) {
    overflow.samples.push_back({{{"metric", "collector"}}, static_cast<double>(dropped), {}});
  }
  if (!overflow.samples.empty()) out.push_back(std::move(overflow));
  return out;
}

std::string Registry::Serialize() const { return metrics::Serialize(Collect()); }

}  // namespace mambaserve::metrics
