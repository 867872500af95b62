#include "server/metrics/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace mambaserve::metrics {
namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void AddGauge(std::vector<prometheus::MetricFamily>* out, std::string name, std::string help,
              double value, prometheus::MetricType type = prometheus::MetricType::Gauge) {
  prometheus::ClientMetric sample;
  if (type == prometheus::MetricType::Counter) {
    sample.counter.value = value;
  } else {
    sample.gauge.value = value;
  }
  out->push_back({std::move(name), std::move(help), type, {std::move(sample)}});
}

// Boot time, from /proc/stat's "btime" line.
bool BootTimeSeconds(double* btime) {
  std::istringstream in(ReadFile("/proc/stat"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) return absl::SimpleAtod(line.substr(6), btime);
  }
  return false;
}

}  // namespace

bool ParseStatm(const std::string& statm, long page_size, double* virtual_bytes,
                double* resident_bytes) {
  std::vector<absl::string_view> fields =
      absl::StrSplit(statm, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  double size = 0, resident = 0;
  if (fields.size() < 2 || !absl::SimpleAtod(fields[0], &size) ||
      !absl::SimpleAtod(fields[1], &resident)) {
    return false;
  }
  *virtual_bytes = size * static_cast<double>(page_size);
  *resident_bytes = resident * static_cast<double>(page_size);
  return true;
}

bool ParseStat(const std::string& stat, double ticks_per_second, double* cpu_seconds,
               double* start_ticks) {
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return false;
  // After "pid (comm)" the fields start at 3 (state); utime is field 14, so index 11 here.
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(paren + 1), ' ', absl::SkipEmpty());
  double utime = 0, stime = 0;
  if (fields.size() < 20 || !absl::SimpleAtod(fields[11], &utime) ||
      !absl::SimpleAtod(fields[12], &stime) || !absl::SimpleAtod(fields[19], start_ticks)) {
    return false;
  }
  *cpu_seconds = (utime + stime) / ticks_per_second;
  return true;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> families;
  std::vector<prometheus::MetricFamily>* out = &families;
  double virtual_bytes = 0, resident_bytes = 0;
  if (ParseStatm(ReadFile("/proc/self/statm"), sysconf(_SC_PAGESIZE), &virtual_bytes,
                 &resident_bytes)) {
    AddGauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
             resident_bytes);
    AddGauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", virtual_bytes);
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  double cpu_seconds = 0, start_ticks = 0, btime = 0;
  if (ParseStat(ReadFile("/proc/self/stat"), ticks, &cpu_seconds, &start_ticks)) {
    AddGauge(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             cpu_seconds, prometheus::MetricType::Counter);
    if (BootTimeSeconds(&btime)) {
      AddGauge(out, "process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.",
               btime + start_ticks / ticks);
    }
  }
  std::error_code ec;
  int fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) AddGauge(out, "process_open_fds", "Number of open file descriptors.", fds);
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    AddGauge(out, "process_max_fds", "Maximum number of open file descriptors.",
             static_cast<double>(limit.rlim_cur));
  }
  return families;
}

}  // namespace mambaserve::metrics
