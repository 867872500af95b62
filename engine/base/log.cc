#include "engine/base/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace mambaserve {

namespace {
std::atomic<LogLevel> min_level{LogLevel::kInfo};
}  // namespace

void SetMinLogLevel(LogLevel level) { min_level.store(level, std::memory_order_relaxed); }

void LogLine(LogLevel level, std::string_view message) {
  if (level < min_level.load(std::memory_order_relaxed)) return;
  static std::mutex mu;
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  localtime_r(&seconds, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d %H:%M:%S", &tm);
  const char tag = level == LogLevel::kInfo ? 'I' : level == LogLevel::kWarning ? 'W' : 'E';
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%c%s.%03d %.*s\n", tag, stamp, millis, static_cast<int>(message.size()),
               message.data());
}

}  // namespace mambaserve
