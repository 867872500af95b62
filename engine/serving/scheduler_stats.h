// What the scheduler publishes after every step, for whoever reports on it (metrics exporters,
// GetModelInfo, tests). Plain data, no metrics library: readers copy a consistent snapshot.
#pragma once

#include <cstdint>
#include <mutex>

namespace mambaserve {

struct SchedulerStats {
  // Gauges, as of the end of the last step.
  int32_t running = 0;  // sequences holding a slot and generating (paused ones included)
  int32_t paused = 0;   // running sequences skipped because their reader is behind
  int32_t waiting = 0;  // accepted requests not yet admitted (admission queue)
  int32_t slots_total = 0;
  int32_t slots_in_use = 0;     // held by running sequences
  int32_t slots_idle = 0;       // held by resident sessions between turns
  int32_t sessions = 0;         // all live sessions (resident + parked + not yet used)
  int32_t sessions_parked = 0;  // state in host memory
  int64_t parked_bytes = 0;
  // The last step.
  int32_t batch_size = 0;   // sequences in the step
  int32_t step_tokens = 0;  // tokens fed in the step (prefill + decode)
  int32_t step_prefill_tokens = 0;
  int32_t step_decode_tokens = 0;
  double step_seconds = 0;
  // Counters since start.
  int64_t steps = 0;
  int64_t requests_admitted = 0;
  int64_t requests_finished = 0;   // every end: length, stop, eos, cancelled, error
  int64_t requests_cancelled = 0;  // client cancel, disconnect, deadline
  int64_t requests_failed = 0;     // ended with an error status
  int64_t requests_rejected = 0;   // admission queue full
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t sessions_parked_total = 0;
  int64_t sessions_restored_total = 0;
  int64_t sessions_evicted_total = 0;  // dropped from host memory over the budget
  int64_t sessions_expired_total = 0;  // idle past the TTL
  // The prefix-state cache (requests without a session); budget 0: off.
  int64_t prefix_cache_budget_bytes = 0;
  int64_t prefix_cache_hits = 0;
  int64_t prefix_cache_misses = 0;
  int64_t prefix_cache_saved_tokens = 0;  // prompt tokens not prefilled thanks to hits
  int64_t prefix_cache_bytes = 0;         // gauge
  int64_t prefix_cache_entries = 0;       // gauge
};

// Single writer (the scheduler thread), any number of readers.
class SchedulerStatsPublisher {
 public:
  void Publish(const SchedulerStats& stats) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = stats;
  }
  SchedulerStats Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  mutable std::mutex mu_;
  SchedulerStats stats_;
};

}  // namespace mambaserve
