// The plain data model every metric source produces at scrape time and the text exposition
// consumes: a family (name, help, type) and its samples. Owned metrics (Counter, Gauge, Histogram)
// and scrape-time collectors (engine snapshots, /proc) both turn into these, so there is one
// serializer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mambaserve::metrics {

enum class MetricType { kCounter, kGauge, kHistogram, kUntyped };

// Label name/value pairs in a fixed order (the family's label-name order).
using Labels = std::vector<std::pair<std::string, std::string>>;

// A histogram's state: finite upper bounds, strictly increasing, and one count per bucket plus one
// for +Inf. Counts are per bucket (not cumulative); the exposition cumulates them.
struct HistogramData {
  std::vector<double> upper_bounds;
  std::vector<uint64_t>
      bucket_counts;  // [upper_bounds.size() + 1], the last one is (max bound, +Inf]
  double sum = 0;

  uint64_t count() const;
  // Single-threaded accumulation (e.g. on the scheduler thread before it publishes a snapshot).
  static HistogramData WithBounds(std::vector<double> upper_bounds);
  void Observe(double value);
  // True when bucket_counts has the right length and the bounds are finite and increasing.
  bool IsValid() const;
};

struct Sample {
  Labels labels;
  double value = 0;         // counter / gauge / untyped
  HistogramData histogram;  // histogram families only
};

struct FamilySnapshot {
  std::string name;  // as exposed: counters carry their `_total` suffix
  std::string help;
  MetricType type = MetricType::kUntyped;
  std::vector<Sample> samples;
};

}  // namespace mambaserve::metrics
