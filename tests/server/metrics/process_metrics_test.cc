#include "server/metrics/process_metrics.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace mambaserve::metrics {
namespace {

TEST(ProcessMetricsTest, ParseStatm) {
  double virtual_bytes = 0, resident_bytes = 0;
  ASSERT_TRUE(ParseStatm("2000 300 100 10 0 500 0\n", 4096, &virtual_bytes, &resident_bytes));
  EXPECT_DOUBLE_EQ(virtual_bytes, 2000.0 * 4096);
  EXPECT_DOUBLE_EQ(resident_bytes, 300.0 * 4096);
  EXPECT_FALSE(ParseStatm("", 4096, &virtual_bytes, &resident_bytes));
  EXPECT_FALSE(ParseStatm("12", 4096, &virtual_bytes, &resident_bytes));
}

TEST(ProcessMetricsTest, ParseStatWithAwkwardCommand) {
  // comm may hold spaces and ')' — fields are counted after the last ')'.
  const std::string stat =
      "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 "
      "98765 1000000 300 18446744073709551615";
  double cpu = 0, start = 0;
  ASSERT_TRUE(ParseStat(stat, 100, &cpu, &start));
  EXPECT_DOUBLE_EQ(cpu, 3.0);  // (250 + 50) / 100
  EXPECT_DOUBLE_EQ(start, 98765);
  EXPECT_FALSE(ParseStat("garbage", 100, &cpu, &start));
}

TEST(ProcessMetricsTest, CollectsFromProcSelf) {
  std::map<std::string, prometheus::MetricFamily> by_name;
  for (auto& f : ProcessCollector().Collect()) by_name[f.name] = f;
  auto gauge = [&](const std::string& name) { return by_name.at(name).metric.at(0).gauge.value; };
  ASSERT_TRUE(by_name.count("process_resident_memory_bytes"));
  EXPECT_GT(gauge("process_resident_memory_bytes"), 1 << 20);
  EXPECT_GT(gauge("process_virtual_memory_bytes"), gauge("process_resident_memory_bytes"));
  ASSERT_TRUE(by_name.count("process_cpu_seconds_total"));
  EXPECT_EQ(by_name["process_cpu_seconds_total"].type, prometheus::MetricType::Counter);
  ASSERT_TRUE(by_name.count("process_start_time_seconds"));
  EXPECT_GT(gauge("process_start_time_seconds"), 1.5e9);
  ASSERT_TRUE(by_name.count("process_open_fds"));
  EXPECT_GE(gauge("process_open_fds"), 3);
  ASSERT_TRUE(by_name.count("process_max_fds"));
}

}  // namespace
}  // namespace mambaserve::metrics
