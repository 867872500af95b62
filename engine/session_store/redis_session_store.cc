#include "engine/session_store/redis_session_store.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/serving/session_blob.h"
#include "engine/serving/session_manager.h"

namespace mambaserve {
namespace {

// KEYS[1] lease; ARGV[1] token, ARGV[2] ttl ms.
constexpr std::string_view kRenewScript = R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0)";

// KEYS[1] lease; ARGV[1] token.
constexpr std::string_view kReleaseScript = R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0)";

// KEYS[1] lease; ARGV[1] token, ARGV[2] the token that replaces it (same expiry).
constexpr std::string_view kSwapScript = R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') end
return 0)";

// KEYS[1] lease, KEYS[2] session; ARGV: token, version, len, fp, crc, blob, ttl ms.
// -1: the lease is not ours; -2: the store holds this version or a newer one; -3: deleted.
constexpr std::string_view kWriteScript = R"(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HEXISTS', KEYS[2], 'deleted') == 1 then return -3 end
local stored = tonumber(redis.call('HGET', KEYS[2], 'v') or '-1')
if stored >= tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'len', ARGV[3], 'fp', ARGV[4], 'crc', ARGV[5],
           'blob', ARGV[6])
if tonumber(ARGV[7]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[7])
else redis.call('PERSIST', KEYS[2]) end
return 1)";

// KEYS[1] session; ARGV: version, len, fp, crc, blob, ttl ms. 0: the id is taken. A deleted
// session's tombstone does not take it. Scripts write HSET first: Redis checks for a full memory
// at a script's first write only.
constexpr std::string_view kCreateScript = R"(
if redis.call('HEXISTS', KEYS[1], 'v') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'len', ARGV[2], 'fp', ARGV[3], 'crc', ARGV[4],
           'blob', ARGV[5])
redis.call('HDEL', KEYS[1], 'deleted')
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return 1)";

// KEYS[1] lease, KEYS[2] session; ARGV[1] token, ARGV[2] tombstone ttl ms. The session becomes a
// tombstone, so that a replica still holding a copy learns it was deleted instead of storing it
// again. -1: the lease is not ours; else 1 if there was a session.
constexpr std::string_view kDeleteScript = R"(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local existed = redis.call('HEXISTS', KEYS[2], 'v')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'deleted', '1')
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return existed)";

// The id as messages show it: without the owner scope.
absl::string_view Name(const std::string& id) { return SessionManager::SessionName(id); }

std::string Crc32Text(const std::string& blob) {
  return std::to_string(Crc32({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()}));
}

absl::StatusOr<int64_t> IntegerReply(const RedisReply& reply) {
  if (reply.kind != RedisReply::Kind::kInteger) {
    return absl::InternalError("the session store answered a script with a non-integer");
  }
  return reply.integer;
}

absl::Status Corrupt(const std::string& id, std::string_view what) {
  return absl::DataLossError(absl::StrCat(
      "session \"", Name(id), "\" in the session store is corrupt: ", std::string(what)));
}

absl::Status Deleted(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("session \"", Name(id), "\" was deleted"));
}

// Parses HMGET deleted v len fp [crc blob].
absl::StatusOr<std::optional<StoredSession>> ParseFields(const std::string& id,
                                                         const RedisReply& reply, bool with_blob) {
  const size_t expected = with_blob ? 6 : 4;
  if (reply.kind != RedisReply::Kind::kArray || reply.elements.size() != expected) {
    return absl::InternalError("the session store answered HMGET with an unexpected reply");
  }
  const std::vector<RedisReply>& f = reply.elements;
  if (!f[0].is_nil()) return Deleted(id);
  if (f[1].is_nil()) return std::nullopt;  // no hash (or not one of ours)
  for (size_t i = 1; i < f.size(); ++i) {
    if (f[i].kind != RedisReply::Kind::kString) return Corrupt(id, "a field is missing");
  }
  StoredSession session;
  if (!absl::SimpleAtoi(f[1].string, &session.header.version) ||
      !absl::SimpleAtoi(f[2].string, &session.header.length)) {
    return Corrupt(id, "its version or length is not a number");
  }
  session.header.fingerprint = f[3].string;
  if (with_blob) {
    session.blob = f[5].string;
    if (Crc32Text(session.blob) != f[4].string) {
      return Corrupt(id, "its blob does not match its checksum");
    }
  }
  return session;
}

}  // namespace

RedisSessionStore::RedisSessionStore(RedisSessionStoreOptions options)
    : options_(std::move(options)) {
  for (int i = 0; i < std::max(1, options_.connections); ++i) {
    idle_.push_back(std::make_unique<RedisConnection>(options_.endpoint, options_.timeout));
  }
}

std::string RedisSessionStore::SessionKey(const std::string& id) const {
  return absl::StrCat(options_.key_prefix, "session:{", id, "}");
}

std::string RedisSessionStore::LeaseKey(const std::string& id) const {
  return absl::StrCat(options_.key_prefix, "lease:{", id, "}");
}

absl::StatusOr<RedisReply> RedisSessionStore::Run(const std::vector<std::string_view>& args) {
  std::unique_ptr<RedisConnection> connection;
  {
    std::unique_lock<std::mutex> lock(mu_);
    returned_.wait(lock, [&] { return !idle_.empty(); });
    connection = std::move(idle_.back());
    idle_.pop_back();
  }
  absl::StatusOr<RedisReply> reply = connection->Command(args);
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(connection));
  }
  returned_.notify_one();
  return reply;
}

absl::Status RedisSessionStore::Ping() { return Run({"PING"}).status(); }

absl::Status RedisSessionStore::AcquireLease(const std::string& id, const std::string& token,
                                             std::chrono::milliseconds ttl) {
  const std::string key = LeaseKey(id), ms = std::to_string(ttl.count());
  ASSIGN_OR_RETURN(RedisReply reply, Run({"SET", key, token, "NX", "PX", ms}));
  if (reply.is_nil()) {
    return absl::AbortedError(absl::StrCat("session \"", Name(id),
                                           "\" has a turn running on another replica; send the "
                                           "next turn when the current one has finished"));
  }
  return absl::OkStatus();
}

absl::Status RedisSessionStore::RenewLease(const std::string& id, const std::string& token,
                                           std::chrono::milliseconds ttl) {
  const std::string key = LeaseKey(id), ms = std::to_string(ttl.count());
  ASSIGN_OR_RETURN(RedisReply reply, Run({"EVAL", kRenewScript, "1", key, token, ms}));
  ASSIGN_OR_RETURN(int64_t renewed, IntegerReply(reply));
  if (renewed == 0) {
    return absl::AbortedError(absl::StrCat("the lease on session \"", Name(id), "\" expired"));
  }
  return absl::OkStatus();
}

absl::Status RedisSessionStore::ReleaseLease(const std::string& id, const std::string& token) {
  const std::string key = LeaseKey(id);
  return Run({"EVAL", kReleaseScript, "1", key, token}).status();
}

absl::Status RedisSessionStore::MarkStoring(const std::string& id, const std::string& token) {
  const std::string key = LeaseKey(id), storing = StoringToken(token);
  ASSIGN_OR_RETURN(RedisReply reply, Run({"EVAL", kSwapScript, "1", key, token, storing}));
  if (reply.kind != RedisReply::Kind::kStatus) {
    return absl::AbortedError(absl::StrCat("the lease on session \"", Name(id), "\" expired"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisSessionStore::LeaseState> RedisSessionStore::GetLeaseState(
    const std::string& id) {
  const std::string key = LeaseKey(id);
  ASSIGN_OR_RETURN(RedisReply reply, Run({"GET", key}));
  if (reply.kind != RedisReply::Kind::kString) return LeaseState::kFree;
  return absl::EndsWith(reply.string, ":storing") ? LeaseState::kStoring : LeaseState::kTurnRunning;
}

absl::StatusOr<std::optional<StoredSessionHeader>> RedisSessionStore::ReadHeader(
    const std::string& id) {
  const std::string key = SessionKey(id);
  ASSIGN_OR_RETURN(RedisReply reply, Run({"HMGET", key, "deleted", "v", "len", "fp"}));
  ASSIGN_OR_RETURN(std::optional<StoredSession> session, ParseFields(id, reply, false));
  if (!session) return std::nullopt;
  return session->header;
}

absl::StatusOr<std::optional<StoredSession>> RedisSessionStore::Read(const std::string& id) {
  const std::string key = SessionKey(id);
  ASSIGN_OR_RETURN(RedisReply reply,
                   Run({"HMGET", key, "deleted", "v", "len", "fp", "crc", "blob"}));
  return ParseFields(id, reply, true);
}

absl::Status RedisSessionStore::Write(const std::string& id, const std::string& token,
                                      const StoredSession& session, std::chrono::milliseconds ttl) {
  const std::string lease = LeaseKey(id), key = SessionKey(id),
                    version = std::to_string(session.header.version),
                    length = std::to_string(session.header.length), crc = Crc32Text(session.blob),
                    ms = std::to_string(ttl.count());
  ASSIGN_OR_RETURN(RedisReply reply,
                   Run({"EVAL", kWriteScript, "2", lease, key, token, version, length,
                        session.header.fingerprint, crc, session.blob, ms}));
  ASSIGN_OR_RETURN(int64_t written, IntegerReply(reply));
  if (written == -1) {
    return absl::AbortedError(
        absl::StrCat("the lease on session \"", Name(id), "\" expired before its turn was stored"));
  }
  if (written == -3) return Deleted(id);
  if (written == -2) {
    return absl::AbortedError(absl::StrCat("session \"", Name(id),
                                           "\" in the store is already at turn ",
                                           session.header.version, " or later"));
  }
  return absl::OkStatus();
}

absl::Status RedisSessionStore::Create(const std::string& id, const StoredSession& session,
                                       std::chrono::milliseconds ttl) {
  const std::string key = SessionKey(id), version = std::to_string(session.header.version),
                    length = std::to_string(session.header.length), crc = Crc32Text(session.blob),
                    ms = std::to_string(ttl.count());
  ASSIGN_OR_RETURN(RedisReply reply, Run({"EVAL", kCreateScript, "1", key, version, length,
                                          session.header.fingerprint, crc, session.blob, ms}));
  ASSIGN_OR_RETURN(int64_t created, IntegerReply(reply));
  if (created == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("session \"", Name(id), "\" already exists in the session store"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> RedisSessionStore::Delete(const std::string& id, const std::string& token,
                                               std::chrono::milliseconds tombstone_ttl) {
  const std::string lease = LeaseKey(id), key = SessionKey(id),
                    ms = std::to_string(tombstone_ttl.count());
  ASSIGN_OR_RETURN(RedisReply reply, Run({"EVAL", kDeleteScript, "2", lease, key, token, ms}));
  ASSIGN_OR_RETURN(int64_t deleted, IntegerReply(reply));
  if (deleted == -1) {
    return absl::AbortedError(absl::StrCat("the lease on session \"", Name(id), "\" was lost"));
  }
  return deleted > 0;
}

}  // namespace mambaserve
