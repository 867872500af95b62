// What the metrics need from the engine, as plain values. The server adapts the scheduler's
// published snapshot (engine/scheduler_stats.h) into this at scrape time, so a scrape reads a copy
// the scheduler already published and never waits on the scheduler thread.
#pragma once

#include <cstdint>

namespace mambaserve::metrics {

struct EngineStats {
  int64_t requests_running = 0;  // sequences in the scheduler's running batch
  int64_t requests_waiting = 0;  // admitted, waiting for a state slot or their first step

  // State slots: fixed in number and size at start; memory never grows with tokens.
  int64_t slots_total = 0;
  int64_t slots_active = 0;         // held by a running sequence
  int64_t slots_idle_resident = 0;  // held by an idle session whose state stays on the device
  int64_t sessions_live = -1;  // all live sessions (resident, parked, not yet used); -1 unknown
  int64_t sessions_parked_on_host = 0;  // idle sessions whose state was moved to host memory
  int64_t state_bytes_per_session = 0;  // one slot: conv + SSM state
  int64_t state_pool_bytes = 0;         // reserved for all slots at start
  int64_t state_host_bytes = -1;        // parked states in host memory; -1: parked x per-session

  // Device memory as the backend reports it; negative when unknown (CPU backend).
  int64_t device_memory_used_bytes = -1;
  int64_t device_memory_total_bytes = -1;

  // Session lifecycle, cumulative since start; -1 when the engine does not count that event.
  int64_t sessions_created = -1;
  int64_t sessions_resumed = -1;   // a request continued a resident session
  int64_t sessions_parked = -1;    // state copied device -> host to free a slot
  int64_t sessions_restored = -1;  // state copied host -> device for a request
  int64_t sessions_evicted = -1;   // dropped under memory pressure
  int64_t sessions_expired = -1;   // dropped by TTL

  // The prefix-state cache; -1 when it is off.
  int64_t prefix_cache_hits = -1;
  int64_t prefix_cache_misses = -1;
  int64_t prefix_cache_saved_tokens = -1;  // prompt tokens not prefilled thanks to hits
  int64_t prefix_cache_bytes = -1;
  int64_t prefix_cache_entries = -1;

  // The shared session store (StoredSessions); -1 without one.
  int64_t session_store_loads = -1;
  int64_t session_store_writes = -1;
  int64_t session_store_written_bytes = -1;
  double session_store_write_seconds = -1;  // summed over the writes
  int64_t session_store_lease_conflicts = -1;
  int64_t session_store_errors = -1;
  int64_t session_store_unstored_sessions = -1;  // now: newest turn not in the store yet
};

class EngineStatsSource {
 public:
  virtual ~EngineStatsSource() = default;
  // Called on a scrape thread. Must return quickly and must not block on the scheduler.
  virtual EngineStats Snapshot() const = 0;
};

}  // namespace mambaserve::metrics
