// One connection to Redis through hiredis (blocking, with connect and command timeouts). Not
// thread-safe: RedisSessionStore hands each to one caller at a time. A connection that failed (an
// I/O error or a timeout leaves the protocol stream in an unknown place) is dropped and re-opened
// by the next command, so a Redis restart costs the commands that were in flight, not the process.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/session_store/redis_url.h"

struct redisContext;

namespace mambaserve {

// A reply, flattened to what the session store uses.
struct RedisReply {
  enum class Kind { kNil, kInteger, kString, kStatus, kArray };
  Kind kind = Kind::kNil;
  int64_t integer = 0;
  std::string string;                // kString and kStatus
  std::vector<RedisReply> elements;  // kArray

  bool is_nil() const { return kind == Kind::kNil; }
};

class RedisConnection {
 public:
  RedisConnection(RedisEndpoint endpoint, std::chrono::milliseconds timeout)
      : endpoint_(std::move(endpoint)), timeout_(timeout) {}
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends one command (binary-safe arguments) and reads its reply. Unavailable: no connection,
  // an I/O error or a timeout; ResourceExhausted: Redis refused a write for lack of memory
  // (OOM); FailedPrecondition: any other error reply, with Redis' message.
  absl::StatusOr<RedisReply> Command(const std::vector<std::string_view>& args);

 private:
  absl::Status Connect();
  void Disconnect();

  const RedisEndpoint endpoint_;
  const std::chrono::milliseconds timeout_;
  redisContext* context_ = nullptr;
};

}  // namespace mambaserve
