#include "server/cli/command_line.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mambaserve {

absl::StatusOr<CommandLine> CommandLine::Parse(int argc, char** argv,
                                               const std::set<std::string>& value_flags,
                                               const std::set<std::string>& switches) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0)
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (switches.count(name)) {
      if (inline_value)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      cl.values_[name] = "true";
    } else if (value_flags.count(name)) {
      if (inline_value) {
        cl.values_[name] = *inline_value;
      } else if (i + 1 < argc) {
        cl.values_[name] = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
  }
  return cl;
}

std::optional<std::string> CommandLine::Get(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string CommandLine::GetOr(const std::string& flag, const std::string& fallback) const {
  return Get(flag).value_or(fallback);
}

absl::StatusOr<std::string> CommandLine::Require(const std::string& flag) const {
  auto v = Get(flag);
  if (!v) return absl::InvalidArgumentError(absl::StrCat("missing required flag --", flag));
  return *v;
}

absl::StatusOr<int64_t> CommandLine::GetInt(const std::string& flag, int64_t fallback) const {
  auto v = Get(flag);
  if (!v) return fallback;
  int64_t out;
  if (!absl::SimpleAtoi(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " expects an integer, got \"", *v, "\""));
  }
  return out;
}

absl::StatusOr<int64_t> CommandLine::GetInt(const std::string& flag, int64_t fallback, int64_t min,
                                            int64_t max) const {
  absl::StatusOr<int64_t> value = GetInt(flag, fallback);
  if (value.ok() && (*value < min || *value > max)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be in [", min, ", ", max, "], not ", *value));
  }
  return value;
}

absl::StatusOr<double> CommandLine::GetDouble(const std::string& flag, double fallback) const {
  auto v = Get(flag);
  if (!v) return fallback;
  double out;
  if (!absl::SimpleAtod(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " expects a number, got \"", *v, "\""));
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("\"", piece, "\" is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::Status WriteOutputFile(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::cout << text;
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

}  // namespace mambaserve
