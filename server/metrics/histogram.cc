#include "server/metrics/histogram.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace mambaserve::metrics {

uint64_t HistogramData::count() const {
  uint64_t total = 0;
  for (uint64_t c : bucket_counts) total += c;
  return total;
}

HistogramData HistogramData::WithBounds(std::vector<double> upper_bounds) {
  HistogramData data;
  data.bucket_counts.assign(upper_bounds.size() + 1, 0);
  data.upper_bounds = std::move(upper_bounds);
  return data;
}

void HistogramData::Observe(double value) {
  if (std::isnan(value) || bucket_counts.size() != upper_bounds.size() + 1) return;
  const auto it = std::lower_bound(upper_bounds.begin(), upper_bounds.end(), value);
  ++bucket_counts[static_cast<size_t>(it - upper_bounds.begin())];
  sum += value;
}

bool HistogramData::IsValid() const {
  return bucket_counts.size() == upper_bounds.size() + 1 && ValidateBuckets(upper_bounds).ok();
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

size_t Histogram::BucketIndex(double value) const {
  // Prometheus buckets are "less than or equal": the first bound >= value.
  return static_cast<size_t>(std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) -
                             upper_bounds_.begin());
}

void Histogram::Observe(double value) { ObserveMany(value, 1); }

void Histogram::ObserveMany(double value, uint64_t n) {
  if (std::isnan(value) || n == 0) return;
  counts_[BucketIndex(value)].fetch_add(n, std::memory_order_relaxed);
  sum_.fetch_add(value * static_cast<double>(n), std::memory_order_relaxed);
}

HistogramData Histogram::Snapshot() const {
  HistogramData data;
  data.upper_bounds = upper_bounds_;
  data.bucket_counts.resize(upper_bounds_.size() + 1);
  for (size_t i = 0; i < data.bucket_counts.size(); ++i) {
    data.bucket_counts[i] = counts_[i].load(std::memory_order_relaxed);
  }
  data.sum = sum_.load(std::memory_order_relaxed);
  return data;
}

absl::Status ValidateBuckets(std::span<const double> upper_bounds) {
  if (upper_bounds.empty())
    return absl::InvalidArgumentError("histogram needs at least one bucket");
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram bucket ", i, " is not finite (+Inf is implicit)"));
    }
    if (i > 0 && !(upper_bounds[i] > upper_bounds[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("histogram bucket ", i, " (", upper_bounds[i],
                                                     ") does not exceed the previous one"));
    }
  }
  return absl::OkStatus();
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

std::vector<double> OneTwoFiveBuckets(double max_value) {
  std::vector<double> bounds;
  for (double decade = 1;; decade *= 10) {
    for (double mantissa : {1.0, 2.0, 5.0}) {
      const double bound = mantissa * decade;
      if (bound > max_value) return bounds;
      bounds.push_back(bound);
    }
  }
}

}  // namespace mambaserve::metrics
