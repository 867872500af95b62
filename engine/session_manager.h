// State slots and sessions. Slots are the backend's fixed state pool; a running sequence holds one.
// A session is a named state that outlives a request: between turns it stays resident in its slot;
// when slots run out, idle sessions are parked to host memory (least recently used first) and
// restored on their next turn; beyond the host budget the oldest parked sessions are evicted, and
// a later use says so (NOT_FOUND naming the eviction) instead of silently starting over.
//
// Not thread-safe: only the scheduler thread uses it, since parking and restoring call the backend.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace mambaserve {

enum class StateLocation { kNone, kDevice, kHost };  // kNone: never used, no state yet
const char* StateLocationName(StateLocation location);

struct SessionInfo {
  std::string id;
  int64_t length = 0;         // tokens in the conversation so far
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  int64_t state_bytes = 0;    // 0 while the session has no state
  StateLocation location = StateLocation::kNone;
  bool busy = false;          // a request is in flight
};

struct SessionManagerOptions {
  int64_t host_budget_bytes = int64_t{1} << 30;  // parked states beyond this are evicted, oldest first
  int64_t ttl_ms = 0;                            // idle sessions older than this expire; 0 = never
  int64_t max_sessions = 1 << 20;                // live sessions (resident + parked + unused)
  std::function<int64_t()> now_ms;               // unix ms; defaults to the system clock
};

// A session's share of one request: where its state is and what to feed before the new prompt.
struct SessionTurn {
  int slot = 0;
  bool start_fresh = false;
  int64_t length = 0;
  std::vector<int32_t> pending_tokens;
};

class SessionManager {
 public:
  SessionManager(Backend* backend, std::string model_fingerprint, SessionManagerOptions options);

  // --- Slots for sequences without a session.
  // A free slot, parking the least recently used idle session if needed. ResourceExhausted when
  // every slot is held by a running sequence (the caller retries at a later step).
  absl::StatusOr<int> AcquireSlot();
  void ReleaseSlot(int slot);

  // --- Session API.
  static absl::Status ValidateSessionId(const std::string& id);
  absl::StatusOr<SessionInfo> Create(const std::string& id);  // empty id: a random one
  absl::StatusOr<SessionInfo> Get(const std::string& id) const;
  std::vector<SessionInfo> List() const;  // ordered by id
  absl::Status Delete(const std::string& id);
  absl::StatusOr<std::string> Export(const std::string& id);
  absl::StatusOr<SessionInfo> Import(const std::string& id, std::span<const uint8_t> blob);

  // --- Turns. Reserve marks the session busy when a request naming it is accepted (a second one
  // gets FailedPrecondition); BeginTurn gives it a slot when the request is admitted
  // (ResourceExhausted: no slot now, retry later); EndTurn or CancelReservation clears it.
  absl::Status Reserve(const std::string& id);
  void CancelReservation(const std::string& id);
  absl::StatusOr<SessionTurn> BeginTurn(const std::string& id);
  // `length`: the conversation's tokens after the turn; `pending`: tokens the state has not consumed.
  // `state_valid` false (a backend error hit the slot): the session is dropped and later uses say why.
  void EndTurn(const std::string& id, int64_t length, std::vector<int32_t> pending, bool state_valid);

  // Expires idle sessions past the TTL; returns how many.
  int ExpireIdle();

  // Counters and gauges for SchedulerStats.
  int num_slots() const { return static_cast<int>(slot_owner_.size()); }
  int slots_running() const { return slots_running_; }
  int slots_idle() const;
  int num_sessions() const { return static_cast<int>(sessions_.size()); }
  int num_parked() const;
  int64_t parked_bytes() const { return parked_bytes_; }
  int64_t parked_total() const { return parked_total_; }
  int64_t restored_total() const { return restored_total_; }
  int64_t evicted_total() const { return evicted_total_; }
  int64_t expired_total() const { return expired_total_; }

 private:
  struct Session {
    std::string id;
    int64_t length = 0;
    int64_t created_ms = 0;
    int64_t last_used_ms = 0;
    StateLocation location = StateLocation::kNone;
    int slot = -1;                      // kDevice
    std::vector<uint8_t> host_state;    // kHost
    std::vector<int32_t> pending_tokens;
    bool busy = false;
    bool in_turn = false;               // holds its slot as a running sequence
  };
  enum class SlotUse { kFree, kRunning, kSession };

  absl::StatusOr<Session*> Find(const std::string& id);
  absl::StatusOr<const Session*> Find(const std::string& id) const;
  SessionInfo Info(const Session& s) const;
  absl::StatusOr<int> FreeSlot();  // a free slot, parking an idle session if needed
  void Park(Session& s);  // frees its slot; a failed read drops the session (with the reason)
  void EnforceHostBudget();
  void Drop(std::string id, std::string reason);  // `id` by value: callers pass the dropped session's own id
  int64_t Now() const { return options_.now_ms(); }

  Backend* backend_;
  std::string fingerprint_;
  SessionManagerOptions options_;
  int64_t state_bytes_;
  std::vector<SlotUse> slot_owner_;
  int slots_running_ = 0;
  std::map<std::string, Session> sessions_;
  // Why recently dropped ids are gone, so their next use gets a clear NOT_FOUND (bounded).
  absl::flat_hash_map<std::string, std::string> tombstones_;
  std::deque<std::string> tombstone_order_;
  int64_t parked_bytes_ = 0;
  int64_t parked_total_ = 0, restored_total_ = 0, evicted_total_ = 0, expired_total_ = 0;
  std::mt19937_64 id_rng_;
};

}  // namespace mambaserve
