#include "server/metrics/collection.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "server/metrics/capped_family.h"

namespace mambaserve::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

prometheus::Family<prometheus::Counter>& AddCounterFamily(Collection& collection,
                                                          const std::string& name) {
  return prometheus::BuildCounter()
      .Name(name)
      .Help("A test counter.")
      .Register(collection.registry());
}

TEST(CappedFamilyTest, CardinalityIsBoundedByMergingIntoOverflow) {
  Collection collection;
  CappedFamily<prometheus::Counter> requests(
      collection, AddCounterFamily(collection, "test_requests_total"), {"peer"}, 3);
  for (int i = 0; i < 10; ++i) requests.WithLabels({absl::StrCat("peer-", i)}).Increment();
  requests.WithLabels({"peer-0"}).Increment();       // still its own series
  requests.WithLabels({"too", "many"}).Increment();  // a caller bug: overflow, not a crash

  const std::string text = collection.Serialize();
  EXPECT_THAT(text, HasSubstr("test_requests_total{peer=\"peer-0\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("test_requests_total{peer=\"peer-2\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("peer-3")));
  EXPECT_THAT(text, HasSubstr("test_requests_total{peer=\"__overflow__\"} 8\n"));
  EXPECT_THAT(
      text,
      HasSubstr("mambaserve_metric_label_overflow_total{metric=\"test_requests_total\"} 8\n"));
}

TEST(CappedFamilyTest, ChildReferencesAreStableAndHistogramsKeepTheirBuckets) {
  Collection collection;
  auto& family =
      prometheus::BuildHistogram().Name("test_seconds").Help("h").Register(collection.registry());
  CappedFamily<prometheus::Histogram> seconds(collection, family, {"method"}, 8, {0.1, 1});
  prometheus::Histogram& a = seconds.WithLabels({"a"});
  for (int i = 0; i < 7; ++i) seconds.WithLabels({absl::StrCat("m", i)});
  EXPECT_EQ(&a, &seconds.WithLabels({"a"}));
  a.Observe(0.5);
  EXPECT_THAT(collection.Serialize(), HasSubstr("test_seconds_bucket{method=\"a\",le=\"1\"} 1\n"));
}

TEST(CollectionTest, CollectorsRunAtScrapeTimeAfterTheOwnedFamilies) {
  class Ticking final : public prometheus::Collectable {
   public:
    std::vector<prometheus::MetricFamily> Collect() const override {
      prometheus::ClientMetric sample;
      sample.gauge.value = static_cast<double>(++calls_);
      return {{"test_ticks", "Scrapes so far.", prometheus::MetricType::Gauge, {sample}}};
    }

   private:
    mutable std::atomic<int> calls_{0};
  };
  Collection collection;
  AddCounterFamily(collection, "test_owned_total").Add({}).Increment();
  collection.AddCollector(std::make_shared<Ticking>());
  EXPECT_THAT(collection.Serialize(), HasSubstr("\ntest_ticks 1\n"));
  const std::vector<prometheus::MetricFamily> families = collection.Collect();
  ASSERT_GE(families.size(), 2u);
  EXPECT_EQ(families.back().name, "test_ticks");
  EXPECT_EQ(families.back().metric.at(0).gauge.value, 2);
}

TEST(CollectionTest, ANameRegisteredTwiceThrows) {
  Collection collection;
  AddCounterFamily(collection, "test_total");
  EXPECT_ANY_THROW(AddCounterFamily(collection, "test_total"));
}

TEST(CollectionTest, ConcurrentIncrementsAndScrapes) {
  Collection collection;
  CappedFamily<prometheus::Counter> calls(
      collection, AddCounterFamily(collection, "test_calls_total"), {"code"}, 4);
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) calls.WithLabels({t % 2 ? "OK" : "NOT_FOUND"}).Increment();
    });
  }
  std::thread scraper([&] {
    for (int i = 0; i < 50; ++i) static_cast<void>(collection.Serialize());
  });
  for (auto& w : writers) w.join();
  scraper.join();
  const std::string text = collection.Serialize();
  EXPECT_THAT(text, HasSubstr("test_calls_total{code=\"OK\"} 4000\n"));
  EXPECT_THAT(text, HasSubstr("test_calls_total{code=\"NOT_FOUND\"} 4000\n"));
}

}  // namespace
}  // namespace mambaserve::metrics
