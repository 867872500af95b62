#include "engine/backend/cpu/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace mambaserve {
namespace {

// Spins until done() or kSpinBeforeBlocking has passed; returns done().
template <typename Done>
bool SpinUntil(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + ThreadPool::kSpinBeforeBlocking;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();  // lets the sibling hyperthread run and saves power while spinning
#endif
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  ranges_.resize(num_threads - 1);
  for (int i = 0; i + 1 < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t align) {
  if (n <= 0) return;
  const int64_t parts = std::min<int64_t>(num_threads(), (n + align - 1) / align);
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  // Even split in units of `align`.
  const int64_t units = (n + align - 1) / align;
  auto bound = [&](int64_t part) { return std::min(n, (units * part / parts) * align); };
  job_ = &fn;
  for (size_t w = 0; w < ranges_.size(); ++w) {
    const int64_t part = static_cast<int64_t>(w) + 1;
    ranges_[w] = part < parts ? std::make_pair(bound(part), bound(part + 1)) : std::make_pair(n, n);
  }
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  bool wake;
  {
    // Under the lock, so that a worker deciding to block either sees the new generation or is
    // counted in sleeping_workers_ and notified.
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleeping_workers_ > 0;
  }
  if (wake) work_cv_.notify_all();
  fn(0, bound(1));
  auto all_done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!SpinUntil(all_done)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, all_done);
  }
}

void ThreadPool::ParallelForDynamic(int64_t n, int64_t chunk,
                                    const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  std::atomic<int64_t> next{0};
  ParallelFor(std::min<int64_t>(num_threads(), (n + chunk - 1) / chunk), [&](int64_t, int64_t) {
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= n) return;
      fn(begin, std::min(n, begin + chunk));
    }
  });
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto has_work = [&] {
      return stop_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen;
    };
    if (!SpinUntil(has_work)) {
      std::unique_lock<std::mutex> lock(mu_);
      ++sleeping_workers_;
      work_cv_.wait(lock, has_work);
      --sleeping_workers_;
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    const std::pair<int64_t, int64_t> range = ranges_[index];
    if (range.first < range.second) (*job_)(range.first, range.second);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The caller may have stopped spinning and be blocked (or about to block) on done_cv_.
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace mambaserve
