// A tiny leveled logger: one line per call to stderr, "I20261128 14:03:05.123 message".
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"

namespace mambaserve {

enum class LogLevel { kInfo, kWarning, kError };
void LogLine(LogLevel level, std::string_view message);
// Lines below `level` are dropped (serve --log-level); kInfo until set.
void SetMinLogLevel(LogLevel level);

template <typename... Args>
void LogInfo(const Args&... args) {
  LogLine(LogLevel::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarning(const Args&... args) {
  LogLine(LogLevel::kWarning, absl::StrCat(args...));
}
template <typename... Args>
void LogError(const Args&... args) {
  LogLine(LogLevel::kError, absl::StrCat(args...));
}

}  // namespace mambaserve
