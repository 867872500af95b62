#include "engine/session_store/redis_url.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"

namespace mambaserve {
namespace {

constexpr std::string_view kScheme = "redis://";

// Decodes %XX escapes (a password may hold '@' or ':'); false on a malformed escape.
bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    int value = 0;
    if (i + 2 >= in.size()) return false;
    for (size_t k = 1; k <= 2; ++k) {
      const char c = in[i + k];
      const int digit = (c >= '0' && c <= '9')   ? c - '0'
                        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
      if (digit < 0) return false;
      value = value * 16 + digit;
    }
    out->push_back(static_cast<char>(value));
    i += 2;
  }
  return true;
}

absl::Status Invalid(const std::string& url, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("--session-store ", RedactedRedisUrl(url), ": ", ToAbsl(why),
                   " (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])"));
}

}  // namespace

absl::StatusOr<RedisEndpoint> ParseRedisUrl(const std::string& url) {
  if (absl::StartsWith(url, "rediss://")) {
    return absl::InvalidArgumentError(
        "--session-store rediss:// (TLS) is not supported: the Redis client library this build "
        "links (hiredis 0.14) has no TLS; run a TLS sidecar such as stunnel next to the server "
        "and point redis:// at it");
  }
  if (!absl::StartsWith(url, ToAbsl(kScheme))) return Invalid(url, "not a redis:// URL");
  std::string_view rest = std::string_view(url).substr(kScheme.size());
  RedisEndpoint endpoint;
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view credentials = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = credentials.find(':');
    const std::string_view user =
        colon == std::string_view::npos ? std::string_view() : credentials.substr(0, colon);
    const std::string_view password =
        colon == std::string_view::npos ? credentials : credentials.substr(colon + 1);
    if (!PercentDecode(user, &endpoint.username) || !PercentDecode(password, &endpoint.password)) {
      return Invalid(url, "malformed %-escape in the credentials");
    }
  }
  if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty() && (!absl::SimpleAtoi(ToAbsl(db), &endpoint.db) || endpoint.db < 0)) {
      return Invalid(url, "the database is not a number >= 0");
    }
  }
  std::string_view port_text;
  if (!rest.empty() && rest.front() == '[') {  // [IPv6]:PORT
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return Invalid(url, "unclosed '[' in the host");
    endpoint.host = std::string(rest.substr(1, close - 1));
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty() && after.front() != ':') return Invalid(url, "junk after the IPv6 host");
    if (!after.empty()) port_text = after.substr(1);
  } else {
    const size_t colon = rest.rfind(':');
    endpoint.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port_text = rest.substr(colon + 1);
  }
  if (!port_text.empty() || absl::EndsWith(ToAbsl(rest), ":")) {
    if (!absl::SimpleAtoi(ToAbsl(port_text), &endpoint.port) || endpoint.port < 1 ||
        endpoint.port > 65535) {
      return Invalid(url, "the port is not a number in [1, 65535]");
    }
  }
  if (endpoint.host.empty()) return Invalid(url, "no host");
  return endpoint;
}

std::string RedactedRedisUrl(const std::string& url) {
  const size_t scheme_end = url.find("://");
  const size_t at = url.rfind('@');
  if (scheme_end == std::string::npos || at == std::string::npos || at < scheme_end) return url;
  const size_t credentials = scheme_end + 3;
  const size_t colon = url.find(':', credentials);
  const size_t secret = colon != std::string::npos && colon < at ? colon + 1 : credentials;
  return absl::StrCat(url.substr(0, secret), "***", url.substr(at));
}

}  // namespace mambaserve
