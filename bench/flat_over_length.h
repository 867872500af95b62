// What both flat-over-length benchmarks (in process, and mambabench through a live server) share:
// reading a process's resident memory, and the summary of how much it and the time per token
// moved between the start and the end of a long generation.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "bench/bench_stats.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

// VmRSS of the process `pid` ("self": this one) in bytes, or -1 when it cannot be read.
inline int64_t ResidentBytes(const std::string& pid = "self") {
  std::ifstream status("/proc/" + pid + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "... kB"
  }
  return -1;
}

// Samples a long stream every `every` tokens: the time per token over the window since the last
// sample and, when `pid` is set, that process's resident memory. Used from one thread.
class WindowSampler {
 public:
  WindowSampler(int64_t every, std::string pid) : every_(every), pid_(std::move(pid)) {}

  // Records a sample for each window that `produced` tokens (so far, in all) have completed.
  void Observe(int64_t produced) {
    while (produced >= next_) {
      const auto now = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(now - window_start_).count();
      window_start_ = now;
      nlohmann::json s = {{"tokens", next_},
                          {"ms_per_token", 1000 * seconds / static_cast<double>(every_)}};
      if (!pid_.empty()) s["rss_bytes"] = ResidentBytes(pid_);
      samples_.push_back(std::move(s));
      next_ += every_;
    }
  }
  const nlohmann::json& samples() const { return samples_; }

 private:
  const int64_t every_;
  const std::string pid_;
  int64_t next_ = every_;
  std::chrono::steady_clock::time_point window_start_ = std::chrono::steady_clock::now();
  nlohmann::json samples_ = nlohmann::json::array();
};

// Median of `key` over samples [begin, end).
inline double MedianOf(const nlohmann::json& samples, const std::string& key, size_t begin,
                       size_t end) {
  std::vector<double> values;
  for (size_t i = begin; i < end; ++i) values.push_back(samples[i][key].get<double>());
  return Percentile(std::move(values), 0.5);
}

// Adds per_token_drift and (when samples carry rss_bytes) rss_growth: the median of the last
// tenth of the samples over the median of the first tenth, minus one. Medians of a tenth, not
// the first and last sample alone: one sample is one window of a shared machine's noise.
inline void AddFlatOverLengthSummary(nlohmann::json& out) {
  const nlohmann::json& samples = out["samples"];
  const size_t n = samples.size();
  if (n < 2) return;
  const size_t tenth = std::max<size_t>(1, n / 10);
  auto change = [&](const std::string& key) {
    return MedianOf(samples, key, n - tenth, n) / MedianOf(samples, key, 0, tenth) - 1.0;
  };
  out["per_token_drift"] = change("ms_per_token");
  if (samples.front().contains("rss_bytes")) out["rss_growth"] = change("rss_bytes");
  out["summary_window_samples"] = tenth;
}

}  // namespace mambaserve
