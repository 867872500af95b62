// A Prometheus histogram with fixed bucket bounds. Observe() is lock-free: one relaxed atomic add
// on the bucket and one on the sum. A scrape reads the buckets without stopping writers, so a
// scrape racing an observation may see the bucket before the sum (the next scrape is exact); the
// count is derived from the buckets, so `_count` always equals the `+Inf` bucket.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "server/metrics/metric_family.h"

namespace mambaserve::metrics {

class Histogram {
 public:
  // `upper_bounds` must pass ValidateBuckets (the registry checks before building one).
  explicit Histogram(std::vector<double> upper_bounds);

  // NaN is dropped: it would poison `_sum` forever.
  void Observe(double value);
  // `n` observations of the same value (e.g. n tokens that arrived in one step).
  void ObserveMany(double value, uint64_t n);

  HistogramData Snapshot() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  size_t BucketIndex(double value) const;

  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // [upper_bounds_.size() + 1]
  std::atomic<double> sum_{0.0};
};

// Bounds must be non-empty, finite and strictly increasing (+Inf is implicit).
absl::Status ValidateBuckets(std::span<const double> upper_bounds);

// Bucket helpers.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// 1, 2, 5, 10, 20, 50, ... up to and including `max_value` (vLLM's token-count buckets).
std::vector<double> OneTwoFiveBuckets(double max_value);

}  // namespace mambaserve::metrics
