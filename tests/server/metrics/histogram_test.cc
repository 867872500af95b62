#include "server/metrics/histogram.h"

#include <limits>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mambaserve::metrics {
namespace {

TEST(HistogramTest, ValuesOnABoundCountInThatBucket) {
  Histogram h({1, 2, 5});
  for (double v : {0.0, 1.0, 1.0000001, 2.0, 4.9, 5.0, 5.1, 1e9, -3.0}) h.Observe(v);
  const HistogramData d = h.Snapshot();
  // (-inf,1]: 0, 1, -3  (1,2]: 1.0000001, 2  (2,5]: 4.9, 5  (5,+inf): 5.1, 1e9
  EXPECT_EQ(d.bucket_counts, (std::vector<uint64_t>{3, 2, 2, 2}));
  EXPECT_EQ(d.count(), 9u);
  EXPECT_DOUBLE_EQ(d.sum, 0 + 1 + 1.0000001 + 2 + 4.9 + 5 + 5.1 + 1e9 - 3);
}

TEST(HistogramTest, NanIsDroppedInfinityGoesToTheLastBucket) {
  Histogram h({1});
  h.Observe(std::numeric_limits<double>::quiet_NaN());
  h.Observe(std::numeric_limits<double>::infinity());
  const HistogramData d = h.Snapshot();
  EXPECT_EQ(d.bucket_counts, (std::vector<uint64_t>{0, 1}));
}

TEST(HistogramTest, ObserveMany) {
  Histogram h({0.1, 1});
  h.ObserveMany(0.5, 4);
  h.ObserveMany(0.5, 0);
  const HistogramData d = h.Snapshot();
  EXPECT_EQ(d.bucket_counts, (std::vector<uint64_t>{0, 4, 0}));
  EXPECT_DOUBLE_EQ(d.sum, 2.0);
}

TEST(HistogramTest, ConcurrentObservationsAreAllCounted) {
  Histogram h({1, 10, 100});
  constexpr int kThreads = 8, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kPerThread; ++i) h.Observe(static_cast<double>((i + t) % 200));
    });
  }
  for (auto& th : threads) th.join();
  const HistogramData d = h.Snapshot();
  EXPECT_EQ(d.count(), static_cast<uint64_t>(kThreads * kPerThread));
  // Every value 0..199 appears 100 times per thread; sum is exact in doubles at this size.
  EXPECT_DOUBLE_EQ(d.sum, kThreads * 100.0 * (199.0 * 200.0 / 2.0));
  EXPECT_EQ(d.bucket_counts[0], static_cast<uint64_t>(kThreads * 100 * 2));   // 0, 1
  EXPECT_EQ(d.bucket_counts[1], static_cast<uint64_t>(kThreads * 100 * 9));   // 2..10
  EXPECT_EQ(d.bucket_counts[2], static_cast<uint64_t>(kThreads * 100 * 90));  // 11..100
  EXPECT_EQ(d.bucket_counts[3], static_cast<uint64_t>(kThreads * 100 * 99));  // 101..199
}

TEST(HistogramDataTest, SingleThreadedAccumulation) {
  HistogramData d = HistogramData::WithBounds({1, 2});
  d.Observe(1);
  d.Observe(3);
  d.Observe(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(d.bucket_counts, (std::vector<uint64_t>{1, 0, 1}));
  EXPECT_TRUE(d.IsValid());
  HistogramData empty;
  EXPECT_FALSE(empty.IsValid());
}

TEST(BucketsTest, Validation) {
  EXPECT_TRUE(ValidateBuckets(std::vector<double>{0.1, 1}).ok());
  EXPECT_FALSE(ValidateBuckets(std::vector<double>{}).ok());
  EXPECT_FALSE(ValidateBuckets(std::vector<double>{1, 1}).ok());
  EXPECT_FALSE(ValidateBuckets(std::vector<double>{2, 1}).ok());
  EXPECT_FALSE(
      ValidateBuckets(std::vector<double>{1, std::numeric_limits<double>::infinity()}).ok());
  EXPECT_FALSE(ValidateBuckets(std::vector<double>{std::numeric_limits<double>::quiet_NaN()}).ok());
}

TEST(BucketsTest, OneTwoFiveLikeVllm) {
  EXPECT_EQ(OneTwoFiveBuckets(100), (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  EXPECT_EQ(OneTwoFiveBuckets(4096),
            (std::vector<double>{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}));
}

TEST(BucketsTest, Exponential) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

}  // namespace
}  // namespace mambaserve::metrics
