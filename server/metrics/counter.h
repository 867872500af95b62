// Counter and Gauge: one atomic double each, so increments from any thread never take a lock.
#pragma once

#include <atomic>
#include <cmath>

namespace mambaserve::metrics {

// Monotonic: negative or NaN increments are ignored (a counter that goes down reads as a restart).
class Counter {
 public:
  void Increment(double delta = 1.0) {
    if (!(delta >= 0)) return;  // also rejects NaN
    value_.fetch_add(delta, std::memory_order_relaxed);
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double delta = 1.0) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Decrement(double delta = 1.0) { value_.fetch_sub(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace mambaserve::metrics
