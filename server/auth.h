// Bearer-token authentication (serve --auth-tokens FILE). The file holds one "TOKEN PRINCIPAL" per
// line ('#' comments and blank lines allowed); a request proves who it is with the metadata
// "authorization: Bearer TOKEN". Tokens are kept only as SHA-256 digests and compared in constant
// time against every entry. The file is read again when it changes (checked at most once a
// second) and on SIGHUP, so tokens rotate without a restart.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mambaserve {

class TokenAuthenticator {
 public:
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(std::string path);

  // The principal of a request's "authorization" metadata value (empty: none was sent).
  // Unauthenticated for a missing, malformed or unknown token.
  absl::StatusOr<std::string> Authenticate(absl::string_view authorization);

  // Reads the file now (SIGHUP); on failure the previous tokens stay and the reason is returned.
  absl::Status Reload() { return Load(); }

  // Principals: 1 to 64 of [A-Za-z0-9._:@-].
  static absl::Status ValidatePrincipal(absl::string_view principal);

 private:
  struct Entry {
    std::string digest;  // SHA-256 of the token
    std::string principal;
  };
  explicit TokenAuthenticator(std::string path) : path_(std::move(path)) {}
  // Parses the file; the entries stay as they were when it cannot be read or parsed.
  absl::Status Load();
  void ReloadIfChanged();

  const std::string path_;
  std::mutex mu_;
  std::vector<Entry> entries_;                          // guarded by mu_
  std::filesystem::file_time_type loaded_mtime_{};      // guarded by mu_
  std::chrono::steady_clock::time_point next_check_{};  // guarded by mu_
};

}  // namespace mambaserve
