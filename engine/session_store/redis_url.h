// Where the session store is: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], as Redis clients write
// it.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace mambaserve {

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string username;  // empty: AUTH with the password alone (the "default" user)
  std::string password;  // empty: no AUTH
};

// InvalidArgument naming what is wrong. rediss:// (TLS) is refused with the reason: the Redis
// client library this build links (hiredis 0.14) has no TLS; run a TLS sidecar (stunnel, spiped)
// and point the URL at it.
absl::StatusOr<RedisEndpoint> ParseRedisUrl(const std::string& url);

// The URL with any password replaced by "***", for logs.
std::string RedactedRedisUrl(const std::string& url);

}  // namespace mambaserve
