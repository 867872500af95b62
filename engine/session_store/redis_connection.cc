#include "engine/session_store/redis_connection.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

RedisReply Flatten(const redisReply& reply) {
  RedisReply out;
  switch (reply.type) {
    case REDIS_REPLY_INTEGER:
      out.kind = RedisReply::Kind::kInteger;
      out.integer = reply.integer;
      break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      out.kind =
          reply.type == REDIS_REPLY_STRING ? RedisReply::Kind::kString : RedisReply::Kind::kStatus;
      out.string.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = RedisReply::Kind::kArray;
      out.elements.reserve(reply.elements);
      for (size_t i = 0; i < reply.elements; ++i)
        out.elements.push_back(Flatten(*reply.element[i]));
      break;
    default:
      break;  // nil
  }
  return out;
}

}  // namespace

RedisConnection::~RedisConnection() { Disconnect(); }

void RedisConnection::Disconnect() {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
}

absl::Status RedisConnection::Connect() {
  const std::string where = absl::StrCat(endpoint_.host, ":", endpoint_.port);
  context_ = redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, ToTimeval(timeout_));
  if (context_ == nullptr || context_->err != 0) {
    const std::string why = context_ != nullptr ? context_->errstr : "out of memory";
    Disconnect();
    return absl::UnavailableError(absl::StrCat("cannot connect to Redis at ", where, ": ", why));
  }
  if (redisSetTimeout(context_, ToTimeval(timeout_)) != REDIS_OK) {
    Disconnect();
    return absl::UnavailableError(absl::StrCat("cannot set a timeout on Redis at ", where));
  }
  // AUTH and SELECT go through Command, which would reconnect: send them on this context only.
  auto setup = [&](const std::vector<std::string_view>& args) -> absl::Status {
    absl::StatusOr<RedisReply> reply = Command(args);
    if (!reply.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "Redis at ", where, " refused ", std::string(args[0]), ": ", reply.status().message()));
    }
    return absl::OkStatus();
  };
  if (!endpoint_.password.empty()) {
    std::vector<std::string_view> auth = {"AUTH"};
    if (!endpoint_.username.empty()) auth.push_back(endpoint_.username);
    auth.push_back(endpoint_.password);
    RETURN_IF_ERROR(setup(auth));
  }
  if (endpoint_.db != 0) {
    const std::string db = std::to_string(endpoint_.db);
    RETURN_IF_ERROR(setup({"SELECT", db}));
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisReply> RedisConnection::Command(const std::vector<std::string_view>& args) {
  if (context_ == nullptr) RETURN_IF_ERROR(Connect());
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (std::string_view arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(args.size()), argv.data(), lengths.data()));
  if (reply == nullptr) {
    // The stream may be mid-reply: this connection cannot be used again.
    const std::string why = context_->errstr;
    Disconnect();
    return absl::UnavailableError(absl::StrCat("Redis at ", endpoint_.host, ":", endpoint_.port,
                                               ": ", why.empty() ? "connection lost" : why));
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string message(reply->str, reply->len);
    freeReplyObject(reply);
    if (absl::StartsWith(message, "OOM")) {
      return absl::ResourceExhaustedError(absl::StrCat("Redis is out of memory: ", message));
    }
    if (absl::StartsWith(message, "LOADING") || absl::StartsWith(message, "BUSY") ||
        absl::StartsWith(message, "MASTERDOWN") || absl::StartsWith(message, "READONLY")) {
      return absl::UnavailableError(absl::StrCat("Redis is not ready: ", message));
    }
    return absl::FailedPreconditionError(absl::StrCat("Redis error: ", message));
  }
  RedisReply out = Flatten(*reply);
  freeReplyObject(reply);
  return out;
}

}  // namespace mambaserve
