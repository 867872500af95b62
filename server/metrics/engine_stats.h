// What the metrics need from the engine, as plain values. The server adapts the scheduler's
// published snapshot (engine/scheduler_stats.h) into this at scrape time, so a scrape reads a copy
// the scheduler already published and never waits on the scheduler thread.
#pragma once

#include <cstdint>

#include "server/metrics/metric_family.h"

namespace mambaserve::metrics {

struct EngineStats {
  int64_t requests_running = 0;  // sequences in the scheduler's running batch
  int64_t requests_waiting = 0;  // admitted, waiting for a state slot or their first step

  // State slots: fixed in number and size at start; memory never grows with tokens.
  int64_t slots_total = 0;
  int64_t slots_active = 0;             // held by a running sequence
  int64_t slots_idle_resident = 0;      // held by an idle session whose state stays on the device
  int64_t sessions_parked_on_host = 0;  // idle sessions whose state was moved to host memory
  int64_t state_bytes_per_session = 0;  // one slot: conv + SSM state
  int64_t state_pool_bytes = 0;         // reserved for all slots at start

  // Device memory as the backend reports it; negative when unknown (CPU backend).
  int64_t device_memory_used_bytes = -1;
  int64_t device_memory_total_bytes = -1;

  // Session lifecycle, cumulative since start.
  uint64_t sessions_created = 0;
  uint64_t sessions_resumed = 0;   // a request continued a resident session
  uint64_t sessions_parked = 0;    // state copied device -> host to free a slot
  uint64_t sessions_restored = 0;  // state copied host -> device for a request
  uint64_t sessions_evicted = 0;   // dropped under memory pressure
  uint64_t sessions_expired = 0;   // dropped by TTL

  // Per scheduler step, cumulative since start. Empty (no bounds) when the engine does not report
  // them; the scheduler fills these with HistogramData::Observe on its own thread.
  HistogramData step_batch_size;        // sequences per step
  HistogramData step_tokens;            // tokens per step (prefill chunks + decodes)
  HistogramData step_duration_seconds;  // wall time of one step (forward + sample)
};

class EngineStatsSource {
 public:
  virtual ~EngineStatsSource() = default;
  // Called on a scrape thread. Must return quickly and must not block on the scheduler.
  virtual EngineStats Snapshot() const = 0;
};

}  // namespace mambaserve::metrics
