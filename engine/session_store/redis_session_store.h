// Sessions in Redis, shared by every replica. Per session id two keys with one hash tag (so a
// Redis Cluster keeps them in one slot and the scripts below may touch both):
//   PREFIX session:{ID}  a hash: v (version: completed turns), len (conversation tokens), fp (the
//                        model fingerprint), crc (CRC-32 of blob), blob (the session blob); or,
//                        once deleted, a tombstone {deleted: 1}
//   PREFIX lease:{ID}    the token of the replica running a turn on it, with an expiry
// Every write that depends on the lease is one Lua script, so it is checked and applied atomically
// in Redis: a replica whose lease ran out (it stalled, or was partitioned away) can never overwrite
// a newer turn written by the replica that took over.
//
// Thread-safe: each call borrows one of a fixed set of connections.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/session_store/redis_connection.h"

namespace mambaserve {

struct RedisSessionStoreOptions {
  RedisEndpoint endpoint;
  std::chrono::milliseconds timeout{2000};  // connect and each command
  std::string key_prefix = "mambaserve:";
  int connections = 4;
};

struct StoredSessionHeader {
  int64_t version = 0;
  int64_t length = 0;
  std::string fingerprint;
};

struct StoredSession {
  StoredSessionHeader header;
  std::string blob;  // a session blob (engine/serving/session_blob.h)
};

class RedisSessionStore {
 public:
  explicit RedisSessionStore(RedisSessionStoreOptions options);

  // PING on one connection: Unavailable with the reason when Redis cannot be reached.
  absl::Status Ping();

  // Aborted when another holder has the lease.
  absl::Status AcquireLease(const std::string& id, const std::string& token,
                            std::chrono::milliseconds ttl);
  // Aborted when `token` no longer holds it (it expired and may have been taken).
  absl::Status RenewLease(const std::string& id, const std::string& token,
                          std::chrono::milliseconds ttl);
  absl::Status ReleaseLease(const std::string& id, const std::string& token);
  // The holder's turn is over and its new version is being written behind: the lease's token
  // becomes StoringToken(token) (Aborted if `token` no longer holds it). A turn that finds the
  // lease in that state waits for it instead of being refused.
  absl::Status MarkStoring(const std::string& id, const std::string& token);
  static std::string StoringToken(const std::string& token) { return token + ":storing"; }
  enum class LeaseState { kFree, kTurnRunning, kStoring };
  absl::StatusOr<LeaseState> GetLeaseState(const std::string& id);

  // nullopt: no such session in the store; NotFound: it was deleted (its tombstone).
  absl::StatusOr<std::optional<StoredSessionHeader>> ReadHeader(const std::string& id);
  // DataLoss when the stored fields are malformed or the blob fails its checksum.
  absl::StatusOr<std::optional<StoredSession>> Read(const std::string& id);

  // Stores `session` (its header's version must be newer than the stored one) if `token` holds
  // the lease; the key then expires after `ttl` (0: never). Aborted when the lease was lost or a
  // newer version is already stored.
  absl::Status Write(const std::string& id, const std::string& token, const StoredSession& session,
                     std::chrono::milliseconds ttl);
  // Stores a new session; AlreadyExists when the id is taken in the store.
  absl::Status Create(const std::string& id, const StoredSession& session,
                      std::chrono::milliseconds ttl);
  // Replaces the session by a tombstone kept for `tombstone_ttl` (0: for ever) if `token` holds
  // its lease (Aborted otherwise); false: there was no session. Writes to a tombstone are
  // refused (NotFound), Create may reuse its id.
  absl::StatusOr<bool> Delete(const std::string& id, const std::string& token,
                              std::chrono::milliseconds tombstone_ttl);

  std::string SessionKey(const std::string& id) const;
  std::string LeaseKey(const std::string& id) const;

 private:
  // Runs `args` on a borrowed connection.
  absl::StatusOr<RedisReply> Run(const std::vector<std::string_view>& args);

  const RedisSessionStoreOptions options_;
  std::mutex mu_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<RedisConnection>> idle_;  // guarded by mu_
};

}  // namespace mambaserve
