#include "server/metrics/registry.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mambaserve::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RegistryTest, RejectsBadRegistrations) {
  Registry registry;
  EXPECT_FALSE(registry.AddCounter("no_suffix", "h", {}).ok());
  EXPECT_FALSE(registry.AddGauge("bad-name", "h", {}).ok());
  EXPECT_FALSE(registry.AddGauge("g", "h", {"le"}).ok());
  EXPECT_FALSE(registry.AddGauge("g", "h", {"__x"}).ok());
  EXPECT_FALSE(registry.AddGauge("g", "h", {"a", "a"}).ok());
  EXPECT_FALSE(registry.AddHistogram("h", "h", {}, {2, 1}).ok());
  ASSERT_TRUE(registry.AddGauge("g", "h", {}).ok());
  EXPECT_EQ(registry.AddGauge("g", "h", {}).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(registry.AddCounter("g", "h", {}).ok());
  // A histogram owns its _bucket/_sum/_count names.
  ASSERT_TRUE(registry.AddHistogram("lat_seconds", "h", {}, {1}).ok());
  EXPECT_FALSE(registry.AddGauge("lat_seconds_count", "h", {}).ok());
}

TEST(RegistryTest, CardinalityIsBoundedByMergingIntoOverflow) {
  Registry registry;
  auto family = registry.AddCounter("requests_total", "h", {"reason"}, /*max_series=*/3);
  ASSERT_TRUE(family.ok());
  for (int i = 0; i < 100; ++i) {
    (*family)->WithLabels({std::to_string(i % 10)}).Increment();
  }
  (*family)->WithLabels({"a", "b"}).Increment();  // wrong arity also lands in overflow
  const std::string text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("requests_total{reason=\"0\"} 10.0\n"));
  EXPECT_THAT(text, HasSubstr("requests_total{reason=\"2\"} 10.0\n"));
  EXPECT_THAT(text, Not(HasSubstr("reason=\"3\"")));
  EXPECT_THAT(text, HasSubstr("requests_total{reason=\"__overflow__\"} 71.0\n"));
  EXPECT_THAT(
      text, HasSubstr("mambaserve_metric_label_overflow_total{metric=\"requests_total\"} 71.0\n"));
}

TEST(RegistryTest, ChildReferencesAreStable) {
  Registry registry;
  auto family = registry.AddGauge("g", "h", {"k"});
  ASSERT_TRUE(family.ok());
  Gauge& first = (*family)->WithLabels({"a"});
  for (int i = 0; i < 100; ++i) (*family)->WithLabels({std::to_string(i)});
  EXPECT_EQ(&first, &(*family)->WithLabels({"a"}));
}

TEST(RegistryTest, CollectorsRunAtScrapeTimeAndBadFamiliesAreDropped) {
  Registry registry;
  ASSERT_TRUE(registry.AddGauge("owned", "h", {}).ok());
  std::atomic<int> calls{0};
  registry.AddCollector([&calls](std::vector<FamilySnapshot>* out) {
    ++calls;
    out->push_back({"collected", "c", MetricType::kGauge, {{{}, static_cast<double>(calls), {}}}});
    out->push_back({"owned", "duplicate of an owned family", MetricType::kGauge, {}});
    out->push_back({"bad name", "invalid", MetricType::kGauge, {}});
  });
  EXPECT_THAT(registry.Serialize(), HasSubstr("collected 1.0\n"));
  const std::string text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("collected 2.0\n"));
  EXPECT_THAT(text, Not(HasSubstr("duplicate")));
  EXPECT_THAT(text, Not(HasSubstr("bad name")));
  EXPECT_THAT(text, HasSubstr("mambaserve_metric_label_overflow_total{metric=\"collector\"} 4.0"));
}

TEST(RegistryTest, ConcurrentIncrementsAndScrapes) {
  Registry registry;
  auto counters = registry.AddCounter("events_total", "h", {"kind"});
  auto gauge = registry.AddGauge("level", "h", {});
  ASSERT_TRUE(counters.ok() && gauge.ok());
  constexpr int kThreads = 8, kPerThread = 50000;
  std::atomic<bool> stop{false};
  std::thread scraper([&] {
    while (!stop.load()) {
      const std::string text = registry.Serialize();
      ASSERT_THAT(text, HasSubstr("# TYPE events_total counter"));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& mine = (*counters)->WithLabels({t % 2 == 0 ? "even" : "odd"});
      for (int i = 0; i < kPerThread; ++i) {
        mine.Increment();
        (*gauge)->WithLabels({}).Increment();
        (*gauge)->WithLabels({}).Decrement(0.5);
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  scraper.join();
  EXPECT_DOUBLE_EQ((*counters)->WithLabels({"even"}).value(), kThreads / 2 * kPerThread);
  EXPECT_DOUBLE_EQ((*counters)->WithLabels({"odd"}).value(), kThreads / 2 * kPerThread);
  EXPECT_DOUBLE_EQ((*gauge)->WithLabels({}).value(), kThreads * kPerThread * 0.5);
}

TEST(CounterTest, NegativeAndNanIncrementsAreIgnored) {
  Counter c;
  c.Increment(2);
  c.Increment(-1);
  c.Increment(std::numeric_limits<double>::quiet_NaN());
  EXPECT_DOUBLE_EQ(c.value(), 2);
}

}  // namespace
}  // namespace mambaserve::metrics
