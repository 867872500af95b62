#include "engine/backend/cpu/thread_pool.h"

#include <algorithm>

namespace mambaserve {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  ranges_.resize(num_threads - 1);
  for (int i = 0; i + 1 < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    for (size_t w = 0; w < ranges_.size(); ++w) {
      const int64_t part = static_cast<int64_t>(w) + 1;
      ranges_[w] =
          part < parts ? std::make_pair(bound(part), bound(part + 1)) : std::make_pair(n, n);
    }
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  work_cv_.notify_all();
  fn(0, bound(1));
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::pair<int64_t, int64_t> range;
    const std::function<void(int64_t, int64_t)>* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      range = ranges_[index];
      job = job_;
    }
    if (range.first < range.second) (*job)(range.first, range.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace mambaserve
