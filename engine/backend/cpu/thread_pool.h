// A fixed set of worker threads for data-parallel loops inside one forward pass. The calling thread
// takes part, so a pool of N threads has N-1 workers.
//
// A decode step runs about six parallel loops per layer, each only tens of microseconds long, back
// to back. Waking a thread blocked on a condition variable costs about as much (50-70 us measured
// on a virtualised 2-core EPYC), so workers and the caller first spin for a short while on an
// atomic before they block: consecutive loops of one step then hand over in well under a
// microsecond, and an idle pool still sleeps.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mambaserve {

class ThreadPool {
 public:
  // How long a thread waiting for work (or for the others to finish) spins before it blocks.
  static constexpr std::chrono::microseconds kSpinBeforeBlocking{100};

  explicit ThreadPool(int num_threads);  // <= 0: hardware concurrency
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, n) into at most num_threads() contiguous ranges and runs fn(begin, end) on each,
  // returning when all are done. Ranges are multiples of `align` (except the last). Not reentrant:
  // one caller at a time.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t align = 1);

  // The same split into ranges of `chunk` (the last shorter), which the threads take in turn as
  // each finishes its previous one: a thread slowed down (a busy core, its share of the memory
  // bandwidth) does less, instead of holding the others at the end.
  void ParallelForDynamic(int64_t n, int64_t chunk,
                          const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  // Written by ParallelFor before it publishes a new generation, read by workers after they see
  // it; the next ParallelFor writes them only after every worker has counted itself done.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;  // per worker; empty range = nothing to do

  std::atomic<uint64_t> generation_{0};  // bumped once per ParallelFor, under mu_
  std::atomic<int> pending_{0};          // workers still running the current generation
  std::atomic<bool> stop_{false};

  std::mutex mu_;  // only for blocking: sleeping_workers_ and the condition variables
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  int sleeping_workers_ = 0;
};

}  // namespace mambaserve
