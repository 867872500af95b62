// The standard process_* metrics every Prometheus client library exports (same names, so existing
// process dashboards work), read from /proc/self at scrape time. prometheus-cpp has no process
// collector of its own.
#pragma once

#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace mambaserve::metrics {

// process_resident_memory_bytes, process_virtual_memory_bytes (from /proc/self/statm),
// process_cpu_seconds_total, process_start_time_seconds (/proc/self/stat), process_open_fds,
// process_max_fds. A file that cannot be read leaves its metrics out of that scrape.
class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// Parsed pieces, exposed for tests. statm: "size resident shared text lib data dt" in pages.
bool ParseStatm(const std::string& statm, long page_size, double* virtual_bytes,
                double* resident_bytes);
// /proc/<pid>/stat: utime+stime (fields 14, 15) and starttime (22), all in clock ticks. The second
// field (comm) may itself contain spaces and parentheses, so parsing starts after the last ')'.
bool ParseStat(const std::string& stat, double ticks_per_second, double* cpu_seconds,
               double* start_ticks);

}  // namespace mambaserve::metrics
