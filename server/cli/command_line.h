// A small `--flag value` / `--switch` parser for the mambaserve subcommands. Unknown flags are
// errors, so a typo never silently falls back to a default.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mambaserve {

class CommandLine {
 public:
  // `value_flags` take a value (`--out DIR`), `switches` do not (`--use-bias`). argv[0] is the
  // subcommand name and is skipped.
  static absl::StatusOr<CommandLine> Parse(int argc, char** argv,
                                           const std::set<std::string>& value_flags,
                                           const std::set<std::string>& switches);

  bool Has(const std::string& flag) const { return values_.count(flag) > 0; }
  std::optional<std::string> Get(const std::string& flag) const;
  std::string GetOr(const std::string& flag, const std::string& fallback) const;
  absl::StatusOr<std::string> Require(const std::string& flag) const;
  absl::StatusOr<int64_t> GetInt(const std::string& flag, int64_t fallback) const;
  // As GetInt, refusing values outside [min, max] with a message naming the flag and the range.
  absl::StatusOr<int64_t> GetInt(const std::string& flag, int64_t fallback, int64_t min,
                                 int64_t max) const;
  absl::StatusOr<double> GetDouble(const std::string& flag, double fallback) const;

 private:
  std::map<std::string, std::string> values_;
};

// "5,17,42" → {5, 17, 42}.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text);

// Writes `text` to `path` ("-" = stdout).
absl::Status WriteOutputFile(const std::string& path, const std::string& text);

}  // namespace mambaserve
