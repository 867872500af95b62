// State slots and sessions. Slots are the backend's fixed state pool; a running sequence holds one.
// A session is a named state that outlives a request: between turns it stays resident in its slot;
// when slots run out, idle sessions are parked to host memory (least recently used first) and
// restored on their next turn; beyond the host budget the oldest parked sessions are evicted, and
// a later use says so (NOT_FOUND naming the eviction) instead of silently starting over.
//
// A turn is atomic: BeginTurn keeps what the session was, CommitTurn replaces it with the turn's
// result, RollBackTurn (a cancelled, timed-out or failed turn) puts it back exactly, so a retried
// turn never sees half of an earlier one.
//
// Thread-safe. Every operation is O(1) or O(log) in the number of sessions except List (O(n), for
// the caller). The methods marked "scheduler thread" call the backend, which has one caller; the
// others touch only metadata and host memory and may run on any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend/backend.h"
#include "engine/serving/session_blob.h"

namespace mambaserve {

enum class StateLocation { kNone, kDevice, kHost };  // kNone: never used, no state yet
const char* StateLocationName(StateLocation location);

struct SessionInfo {
  std::string id;
  int64_t length = 0;  // tokens in the conversation so far
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  int64_t state_bytes = 0;  // 0 while the session has no state
  StateLocation location = StateLocation::kNone;
  bool busy = false;  // a request is in flight
};

struct SessionManagerOptions {
  int64_t host_budget_bytes = int64_t{1}
                              << 30;  // parked states beyond this are evicted, oldest first
  int64_t ttl_ms = 0;                 // idle sessions older than this expire; 0 = never
  int64_t max_sessions = 1 << 20;     // live sessions (resident + parked + unused)
  size_t max_pending_tokens = 8192;   // an imported blob's pending tokens (a prompt's worth)
  // With a key: exports are signed with it (HMAC-SHA256) and imports must carry a valid signature.
  std::string blob_key;
  // Sessions one owner scope ("OWNER/") may hold at once; 0: no limit beyond max_sessions.
  int64_t max_sessions_per_owner = 0;
  std::function<int64_t()> now_ms;  // unix ms; defaults to the system clock
};

// A session's share of one request: where its state is and what to feed before the new prompt.
struct SessionTurn {
  int slot = 0;
  bool start_fresh = false;
  int64_t length = 0;
  std::vector<int32_t> pending_tokens;
};

// What an export encodes: the session as of one instant. `state` is shared with the session while
// it stays parked, so taking a snapshot copies nothing but the state read from a device slot.
struct SessionSnapshot {
  int64_t length = 0;
  std::vector<int32_t> pending_tokens;
  std::shared_ptr<const std::vector<uint8_t>> state;  // null: the session has no state yet
};

// O(1) gauges and counters for SchedulerStats.
struct SessionGauges {
  int slots_running = 0;  // held by running sequences
  int slots_idle = 0;     // held by resident sessions between turns
  int sessions = 0;
  int parked = 0;
  int64_t parked_bytes = 0;
  int64_t parked_total = 0, restored_total = 0, evicted_total = 0, expired_total = 0;
};

class SessionManager {
 public:
  SessionManager(Backend* backend, std::string model_fingerprint, SessionManagerOptions options);
  ~SessionManager();

  // A name a client may give a session: 1 to 128 of [A-Za-z0-9._:-].
  static absl::Status ValidateSessionId(const std::string& id);

  // Session ids may carry an owner scope, "OWNER/NAME": the server scopes the names an
  // authenticated principal uses, so that no other principal can name them (their lookups fail
  // exactly as for an id that does not exist). Messages show only the NAME.
  static absl::string_view SessionName(absl::string_view id);
  static std::string OwnerScope(absl::string_view id);  // "OWNER/", or "" for an unscoped id

  // --- Any thread (metadata and host memory only).
  // An id that is empty or only a scope ("OWNER/") gets a random 128-bit name.
  absl::StatusOr<SessionInfo> Create(const std::string& id);
  absl::StatusOr<SessionInfo> Get(const std::string& id) const;
  // Sessions whose id starts with `owner_scope` (empty: all), ordered by id.
  std::vector<SessionInfo> List(std::string_view owner_scope = "") const;
  absl::Status Delete(const std::string& id);
  // Decodes and checks `blob` on the calling thread, then adds the session, parked. With
  // `replace`, a session `id` already here is replaced (FailedPrecondition while busy) instead of
  // refused: a newer version of it was loaded from a session store.
  absl::StatusOr<SessionInfo> Import(const std::string& id, std::span<const uint8_t> blob,
                                     bool replace = false);
  // Reserve marks the session busy when a request naming it is accepted: a second one gets
  // FailedPrecondition, and a request with an empty prompt is refused unless the session has
  // pending tokens to continue from. CancelReservation undoes it for a request never admitted.
  absl::Status Reserve(const std::string& id, bool prompt_is_empty = false);
  void CancelReservation(const std::string& id);
  SessionGauges Gauges() const;
  // The largest blob Import can accept for this model (what ImportSession may send).
  size_t MaxBlobBytes() const;

  // --- Scheduler thread only (these call the backend).
  // A free slot for a sequence without a session, parking the least recently used idle session
  // if needed. Unavailable when every slot is held by a running sequence (retry at a later step);
  // any other error is final for the request.
  absl::StatusOr<int> AcquireSlot();
  void ReleaseSlot(int slot);
  // Gives a reserved session a slot (restoring a parked state) and remembers what it was.
  // Unavailable: no slot now, retry at a later step; Internal: the backend failed, or the state
  // was lost while the request waited; ResourceExhausted: no host memory for the roll-back copy.
  absl::StatusOr<SessionTurn> BeginTurn(const std::string& id);
  // The turn completed: the conversation is `length` tokens, `pending` of them not yet in the
  // state.
  void CommitTurn(const std::string& id, int64_t length, std::vector<int32_t> pending);
  // The turn did not complete: the session goes back to exactly what it was before BeginTurn.
  void RollBackTurn(const std::string& id);
  // The session as of now, reading a resident state from its slot. FailedPrecondition while busy.
  absl::StatusOr<SessionSnapshot> Snapshot(const std::string& id);
  // A new session `id` (empty or a scope alone: a random name) holding a copy of `source`'s
  // conversation, parked in host memory until its first turn. FailedPrecondition while the
  // source is busy. A parked source's state is shared, not copied: parked states never change.
  absl::StatusOr<SessionInfo> Fork(const std::string& source, const std::string& id);
  absl::StatusOr<std::string> Export(const std::string& id);  // Snapshot + EncodeSnapshot
  // The blob of `snapshot` (any thread); ResourceExhausted when host memory runs out.
  absl::StatusOr<std::string> EncodeSnapshot(const SessionSnapshot& snapshot) const;
  // Expires idle sessions past the TTL; returns how many.
  int ExpireIdle();

  int num_slots() const { return static_cast<int>(slot_owner_.size()); }
  size_t TombstoneEntriesForTest() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tombstone_order_.size();
  }

 private:
  struct Session;
  enum class SlotUse { kFree, kRunning, kSession };
  using SessionList = std::list<Session*>;

  absl::StatusOr<Session*> Find(const std::string& id) const;  // mu_ held
  SessionInfo Info(const Session& s) const;
  absl::StatusOr<int> FreeSlot();  // a free slot, parking an idle session if needed
  void Park(Session& s);           // frees its slot; a failed read drops the session
  void EnforceHostBudget();
  void Drop(Session& s, std::string reason);
  void Touch(Session& s);  // last used now: back of the use order
  // Moves `s` into `list` (its LRU by location), out of the one it was in.
  void Relist(Session& s, SessionList* list);
  void SetParkedState(Session& s, std::shared_ptr<const std::vector<uint8_t>> state);
  void ClearParkedState(Session& s);
  // Adds a session: new (null `contents`), or holding `contents`, parked.
  absl::StatusOr<SessionInfo> AddLocked(const std::string& requested_id, SessionSnapshot* contents);
  std::string NewSessionId() const;
  int64_t Now() const { return options_.now_ms(); }

  Backend* const backend_;
  const std::string fingerprint_;
  SessionManagerOptions options_;
  const int64_t state_bytes_;
  const SessionStateShape state_shape_;

  mutable std::mutex mu_;
  std::vector<SlotUse> slot_owner_;
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_;
  absl::flat_hash_map<std::string, int64_t>
      sessions_per_owner_;    // by scope "OWNER/"; guarded by mu_
  SessionList by_use_;        // every session, least recently used first (the TTL walks it)
  SessionList resident_lru_;  // resident and between turns: parking candidates, LRU first
  SessionList parked_lru_;    // parked to host memory: eviction candidates, LRU first
  SessionGauges gauges_;
  // Why recently dropped ids are gone, so their next use gets a clear NOT_FOUND. Bounded, oldest
  // forgotten first; re-creating an id forgets its tombstone.
  struct Tombstone {
    std::string reason;
    std::list<std::string>::iterator order;
  };
  absl::flat_hash_map<std::string, Tombstone> tombstones_;
  std::list<std::string> tombstone_order_;
};

}  // namespace mambaserve
