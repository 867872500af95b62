#include "engine/backend/cpu/thread_pool.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mambaserve {
namespace {

// Every index of [0, n) is visited exactly once, in ranges that are multiples of `align` (but the
// last), however many threads and whatever n.
void ExpectEachIndexOnce(ThreadPool& pool, int64_t n, int64_t align) {
  std::vector<std::atomic<int>> visits(n);
  std::atomic<bool> misaligned{false};
  pool.ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        if (begin % align != 0 || (end != n && end % align != 0)) misaligned = true;
        for (int64_t i = begin; i < end; ++i) visits[i]++;
      },
      align);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[i].load(), 1) << "n=" << n << " i=" << i;
  EXPECT_FALSE(misaligned) << "n=" << n << " align=" << align;
}

TEST(ThreadPoolTest, CoversEveryIndexOnceForAnySizeAndThreadCount) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {1, 2, 7, 16, 17, 100, 1000}) {
      for (int64_t align : {1, 4, 16}) ExpectEachIndexOnce(pool, n, align);
    }
  }
}

// Loops back to back hand over while the workers still spin; loops far apart find them blocked.
// Both must run every range, and results written by one loop must be seen by the next.
TEST(ThreadPoolTest, SpinningAndBlockedWorkersBothPickUpWork) {
  ThreadPool pool(3);
  std::vector<int64_t> data(3000, 0);
  for (int round = 0; round < 200; ++round) {
    if (round % 20 == 0) {
      std::this_thread::sleep_for(ThreadPool::kSpinBeforeBlocking * 5);  // let them block
    }
    pool.ParallelFor(static_cast<int64_t>(data.size()), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) data[i] += i;
    });
  }
  for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], 200 * static_cast<int64_t>(i));
}

TEST(ThreadPoolTest, DynamicChunksCoverEveryIndexOnceInChunkSizedRanges) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 15, 16, 17, 1000}) {
      for (int64_t chunk : {1, 16, 48}) {
        std::vector<std::atomic<int>> visits(n);
        std::atomic<bool> bad_range{false};
        pool.ParallelForDynamic(n, chunk, [&](int64_t begin, int64_t end) {
          if (begin % chunk != 0 || (end - begin != chunk && end != n)) bad_range = true;
          for (int64_t i = begin; i < end; ++i) visits[i]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[i].load(), 1) << n << "/" << chunk;
        EXPECT_FALSE(bad_range) << n << "/" << chunk;
      }
    }
  }
}

// A thread that stalls on one chunk does not keep the rest of the work waiting for it: the other
// thread takes what is left (with a static split it would do only its own half).
TEST(ThreadPoolTest, DynamicChunksFlowToTheThreadThatIsFree) {
  ThreadPool pool(2);
  std::mutex mu;
  std::thread::id stalled_thread;
  int chunks_by_others = 0;
  pool.ParallelForDynamic(40, 1, [&](int64_t begin, int64_t) {
    if (begin == 0) {
      {
        std::lock_guard<std::mutex> lock(mu);
        stalled_thread = std::this_thread::get_id();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      return;
    }
    // Give the stalled thread's id time to be recorded before counting this chunk.
    for (int i = 0; i < 100; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stalled_thread != std::thread::id()) {
          if (std::this_thread::get_id() != stalled_thread) ++chunks_by_others;
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  EXPECT_GE(chunks_by_others, 30);
}

TEST(ThreadPoolTest, WaitsForTheSlowestRange) {
  ThreadPool pool(2);
  std::atomic<int> finished{0};
  pool.ParallelFor(2, [&](int64_t begin, int64_t) {
    if (begin == 1) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    finished++;
  });
  EXPECT_EQ(finished.load(), 2);
}

TEST(ThreadPoolTest, DestroysCleanlyWhileWorkersSpinOrSleep) {
  for (int i = 0; i < 20; ++i) {
    ThreadPool pool(4);
    if (i % 2 == 0) pool.ParallelFor(8, [](int64_t, int64_t) {});  // workers still spinning
  }
}

}  // namespace
}  // namespace mambaserve
