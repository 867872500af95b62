// A fixed set of threads running posted tasks in order of arrival. The engine runs session
// operations on one (blob encoding, decoding and checksums stay off the scheduler thread and off
// gRPC's), the server writes stream responses from another.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mambaserve {

class WorkerPool {
 public:
  // `max_queued` bounds the tasks waiting for a thread (0 = unbounded: the caller bounds them).
  WorkerPool(int threads, size_t max_queued = 0);
  ~WorkerPool();  // runs every task already posted, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False (and `task` dropped) when the queue is full or the pool is stopping.
  bool Post(std::function<void()> task);
  // Runs what is queued, refuses new tasks, joins the threads. Idempotent.
  void Stop();

 private:
  void Run();

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mambaserve
