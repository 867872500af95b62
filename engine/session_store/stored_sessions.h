// Sessions that outlive a replica: every session is kept in this replica's SessionManager as before
// and, behind it, in a Redis store shared by every replica (RedisSessionStore).
//
// A turn on a session (Submit):
//   1. takes the session's lease in Redis, renewed in the background while the turn runs: ABORTED
//      at once while a turn runs elsewhere, a wait (up to lease_wait) while the previous turn's
//      new version is being written;
//   2. loads the session from the store when this replica does not hold it or holds an older
//      version (versions count completed turns);
//   3. runs the turn in the scheduler, untouched;
//   4. stores the new version: write-behind (the final response goes out first) or, with `sync`,
//      before the final response, so a turn the client saw complete is never lost; then releases
//      the lease.
// Nothing here runs on the scheduler thread: store calls run on this class's own workers.
//
// When the store fails (down, slow, full, a corrupt or foreign blob), the request that needed it
// gets UNAVAILABLE or DATA_LOSS with the reason, the failure is counted, and sessions this replica
// holds keep working from memory; their unstored turns are written at their next turn or Flush.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/base/worker_pool.h"
#include "engine/serving/generation.h"
#include "engine/serving/scheduler.h"
#include "engine/session_store/redis_session_store.h"

namespace mambaserve {

struct StoredSessionsOptions {
  RedisSessionStoreOptions store;
  bool sync = false;  // a turn's final response waits for the store's acknowledgement
  // A lease outlives a replica that died mid-turn by at most this long.
  std::chrono::milliseconds lease_ttl{10000};
  // How long a turn waits for the previous turn's write-behind (on any replica) before ABORTED.
  std::chrono::milliseconds lease_wait{5000};
  std::chrono::milliseconds session_ttl{0};  // the store forgets a session idle this long; 0: never
  int workers = 8;
};

struct SessionStoreStats {
  int64_t loads = 0;   // sessions read from the store (not held here, or a newer version)
  int64_t writes = 0;  // versions stored
  int64_t write_bytes = 0;
  double write_seconds = 0;       // summed over `writes`
  int64_t lease_conflicts = 0;    // turns refused ABORTED: the session was busy elsewhere
  int64_t errors = 0;             // store operations that failed
  int64_t unstored_sessions = 0;  // now: sessions whose newest turn is not in the store yet
};

class StoredSessions {
 public:
  StoredSessions(StoredSessionsOptions options, Scheduler* scheduler, std::string fingerprint);
  ~StoredSessions();  // Stop()

  // A turn on request.session_id, run as described above. Returns at once: OK, or
  // ResourceExhausted / Unavailable when it cannot be queued; everything else (a lease conflict, a
  // store failure, the scheduler refusing it) arrives as the stream's final event.
  absl::Status Submit(GenerationRequest request);

  // Session operations, each blocking on the store (call them from a worker). Create, Import and
  // Fork add the session to the store as well (AlreadyExists when any replica has the id).
  absl::StatusOr<SessionInfo> Create(const std::string& id);
  absl::StatusOr<SessionInfo> Import(const std::string& id, std::span<const uint8_t> blob);
  // Takes the source's lease like a turn: waits for its previous turn to be stored, ABORTED while
  // a turn runs on it on another replica.
  absl::StatusOr<SessionInfo> Fork(const std::string& source, const std::string& id);
  // Deletes it here and in the store.
  absl::Status Delete(const std::string& id);
  // Loads the session if this replica does not hold it or holds an older version; OK when the
  // store cannot be reached but this replica holds it. Before Get and Export.
  absl::Status Refresh(const std::string& id);

  // Waits (until `deadline`) for the turns being stored, then stores every session whose newest
  // turn is not in the store yet. For a draining replica: its sessions continue elsewhere.
  absl::Status Flush(std::chrono::steady_clock::time_point deadline);
  // Stops the lease renewal and the workers (after running what was posted). Idempotent.
  void Stop();

  SessionStoreStats Stats() const;
  RedisSessionStore& store() { return store_; }

 private:
  struct Version {
    int64_t number = 0;  // completed turns
    bool stored = true;  // the store holds `number`
  };

  void RunTurn(std::shared_ptr<GenerationRequest> request);
  // Takes the lease and makes the local copy current. True: the lease is held; false: the store
  // could not be reached and the turn runs on this replica's copy alone.
  absl::StatusOr<bool> BeginTurn(const std::string& id, const std::string& token,
                                 const GenerationStream& stream);
  void FinishTurn(const std::string& id, const std::string& token, bool leased,
                  const std::shared_ptr<GenerationStream>& stream, GenerationEvent event);
  void TurnFinished();  // its final event is pushed: one fewer for Flush to wait for
  absl::Status AcquireLease(const std::string& id, const std::string& token,
                            const GenerationStream* stream);
  void ReleaseLease(const std::string& id, const std::string& token);
  // Loads the stored version when it is newer than what this replica holds (or it holds none).
  absl::Status SyncFromStore(const std::string& id, bool held_here);
  // Writes this replica's copy as its current version under `token`'s lease.
  absl::Status StoreVersion(const std::string& id, const std::string& token);
  // Adds a session made here (version 0) to the store; on failure it is deleted here again.
  absl::StatusOr<SessionInfo> AddToStore(absl::StatusOr<SessionInfo> made, std::string blob);
  absl::StatusOr<std::string> EncodeHeld(const std::string& id);
  absl::Status Counted(absl::Status status);  // counts a store failure
  std::string NewToken();
  void RenewLeases();

  const StoredSessionsOptions options_;
  Scheduler* const scheduler_;
  SessionManager& sessions_;
  const std::string fingerprint_;
  RedisSessionStore store_;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  absl::flat_hash_map<std::string, Version> versions_;    // sessions this replica holds
  absl::flat_hash_map<std::string, std::string> leases_;  // id -> token, renewed
  int turns_finishing_ = 0;  // final events not yet pushed (their store write pending)
  bool stopping_ = false;
  uint64_t token_counter_ = 0;
  const std::string token_prefix_;

  std::atomic<int64_t> loads_{0}, writes_{0}, write_bytes_{0}, write_micros_{0},
      lease_conflicts_{0}, errors_{0};

  WorkerPool workers_;
  std::thread renewer_;
};

}  // namespace mambaserve
