#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/base/log.h"

namespace mambaserve {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

std::string Sha256(absl::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

absl::Status Unauthenticated() {
  return absl::UnauthenticatedError(
      "this server needs \"authorization: Bearer TOKEN\" metadata with a token it knows");
}

}  // namespace

absl::Status TokenAuthenticator::ValidatePrincipal(absl::string_view principal) {
  if (principal.empty() || principal.size() > 64) {
    return absl::InvalidArgumentError("a principal is 1 to 64 characters");
  }
  for (char c : principal) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '@' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("principal \"", principal, "\" has a character outside [A-Za-z0-9._:@-]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromFile(std::string path) {
  std::unique_ptr<TokenAuthenticator> auth(new TokenAuthenticator(std::move(path)));
  if (absl::Status s = auth->Load(); !s.ok()) return s;
  return auth;
}

absl::Status TokenAuthenticator::Load() {
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path_, ec);
  std::ifstream in(path_);
  if (ec || !in)
    return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: cannot read ", path_));
  std::vector<Entry> entries;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text.front() == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(text, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: ", path_, " line ", number,
                                                     ": expected \"TOKEN PRINCIPAL\""));
    }
    if (fields[0].size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: ", path_, " line ", number,
                                                     ": a token needs at least 16 characters"));
    }
    if (absl::Status s = ValidatePrincipal(fields[1]); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-tokens: ", path_, " line ", number, ": ", s.message()));
    }
    entries.push_back({Sha256(fields[0]), std::string(fields[1])});
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: ", path_, " holds no token"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = std::move(entries);
  loaded_mtime_ = mtime;
  return absl::OkStatus();
}

void TokenAuthenticator::ReloadIfChanged() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now < next_check_) return;
    next_check_ = now + std::chrono::seconds(1);
    std::error_code ec;
    const auto mtime = std::filesystem::last_write_time(path_, ec);
    if (ec || mtime == loaded_mtime_) return;
  }
  if (absl::Status s = Load(); s.ok()) {
    LogInfo("auth tokens reloaded from ", path_);
  } else {
    LogWarning("keeping the previous auth tokens: ", s.message());
  }
}

absl::StatusOr<std::string> TokenAuthenticator::Authenticate(absl::string_view authorization) {
  ReloadIfChanged();
  if (!absl::StartsWith(authorization, kBearer)) return Unauthenticated();
  const std::string digest = Sha256(authorization.substr(kBearer.size()));
  std::lock_guard<std::mutex> lock(mu_);
  // Every entry is compared, so the time taken says nothing about which one matched.
  const std::string* principal = nullptr;
  for (const Entry& e : entries_) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) principal = &e.principal;
  }
  if (principal == nullptr) return Unauthenticated();
  return *principal;
}

}  // namespace mambaserve
