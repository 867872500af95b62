// The one thread that drives a Backend. Each step it drops cancelled and past-deadline sequences,
// admits waiting requests while state slots allow, decodes one token for every running sequence
// whose reader keeps up, shares the rest of the step's token budget fairly among the prompts being
// read (engine/serving/prefill_budget.h) — all in one mixed Backend::Forward — then samples and
// publishes each sequence's events.
//
// It does nothing else: no protobuf, no blob encoding or decoding, no walk over all sessions. Its
// only session work is what needs the backend (park, restore, roll back, snapshot a resident
// state), some of it asked for through RunOnSchedulerThread, so the backend never has a second
// caller.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/serving/generation.h"
#include "engine/serving/prefix_cache.h"
#include "engine/serving/scheduler_stats.h"
#include "engine/serving/session_manager.h"
#include "engine/tokenizer/tokenizer.h"

namespace mambaserve {

struct SchedulerOptions {
  int max_batch = 64;         // running sequences at once (each holds a slot)
  int max_queue = 256;        // accepted, not yet running; beyond it Submit says ResourceExhausted
  int max_step_tokens = 256;  // tokens per Forward (decodes first, then prefill chunks)
  int max_pending_tasks = 1024;
  int64_t ttl_check_interval_ms = 1000;
  // A stream whose buffer stays full this long (its client stopped reading) is ended and its slot
  // freed; 0 = never.
  int64_t stalled_reader_timeout_ms = 120'000;
  SessionManagerOptions sessions;
  // States at every prefix_cache_block_tokens-aligned prompt prefix of requests without a
  // session, up to this many bytes (0: off); see PrefixCache.
  int64_t prefix_cache_bytes = 0;
  int64_t prefix_cache_block_tokens = 256;
  // Called on the scheduler thread after each step that ran a batch, with the stats just published
  // (metrics: per-step histograms). Must be cheap and must not block.
  std::function<void(const SchedulerStats&)> on_step;
};

class Scheduler {
 public:
  // `tokenizer` may be null: events then carry no text and stop strings are not matched.
  Scheduler(Backend* backend, const Tokenizer* tokenizer, std::string model_fingerprint,
            SchedulerOptions options);
  ~Scheduler();  // stops the thread, ending every request as cancelled

  void Start();
  // Stops admitting, ends every waiting and running request (cancelled, UNAVAILABLE) and joins.
  // `why` is the final status of every request still waiting or running (UNAVAILABLE).
  void Stop(std::string why = "the server is shutting down; retry on another replica");

  // Accepts a request or refuses it at once: InvalidArgument for a bad prompt (an id outside the
  // vocabulary, or empty where nothing is pending), NotFound / FailedPrecondition for an unknown or
  // busy session, ResourceExhausted when the admission queue is full, Unavailable when stopping.
  // Everything after acceptance (backend error, cancel, deadline) arrives as the stream's final
  // event.
  absl::Status Submit(GenerationRequest request);

  // Runs `task` on the scheduler thread before the next step; ResourceExhausted when too many wait.
  absl::Status RunOnSchedulerThread(std::function<void(SessionManager&)> task);
  // Runs `op` there and waits for its result: for session operations that read a state slot
  // (fork, snapshot), called from a thread that may block (never the scheduler thread).
  template <typename T>
  absl::StatusOr<T> CallOnSchedulerThread(std::function<absl::StatusOr<T>(SessionManager&)> op) {
    auto result = std::make_shared<std::promise<absl::StatusOr<T>>>();
    std::future<absl::StatusOr<T>> taken = result->get_future();
    absl::Status posted =
        RunOnSchedulerThread([op = std::move(op), result](SessionManager& sessions) {
          result->set_value(op(sessions));
        });
    if (!posted.ok()) return posted;
    return taken.get();
  }

  // Thread-safe: session operations that need no backend run on the caller's thread.
  SessionManager& sessions() { return sessions_; }
  const SchedulerStatsPublisher& stats() const { return stats_; }
  const SchedulerOptions& options() const { return options_; }

  // One iteration of the loop, for tests that drive the scheduler without Start(). Returns false
  // when there was nothing to do.
  bool StepForTest() { return RunStep(); }

 private:
  struct Sequence;

  void Loop();
  bool RunStep();
  void EndAll();  // after stopping: ends every request as cancelled (UNAVAILABLE, stop_reason_)
  void TakeIncoming();
  void DropCancelled();
  void Admit();
  absl::Status StartSequence(Sequence& seq);
  // Emits a sampled token: stop checks, detokenization, events, finishing.
  void HandleToken(Sequence& seq, const SampledToken& sampled);
  // With the prefix cache: starts a sequence without a session from the longest cached prefix of
  // its prompt (else from a zeroed state), and whether to stop its next chunk at a block boundary
  // so the state there can be cached.
  absl::Status StartFromCachedPrefix(Sequence& seq);
  int64_t NextBoundaryToCache(const Sequence& seq) const;
  void CacheBoundaryState(Sequence& seq);
  // Scores the prompt tokens that step rows [0, rows) of sequence `index` predict (feed positions
  // from `first`) and pushes them as one event. False when the sequence failed (and is finished).
  bool EmitPromptLogprobs(Sequence& seq, int index, size_t first, size_t rows);
  // The error that ends a turn whose logits held a NaN or an infinity.
  absl::Status NonFiniteLogits(const Sequence& seq) const;
  // Ends `seq`: releases its slot, or commits (completed) or rolls back its session's turn, and
  // pushes the final event.
  void Finish(Sequence& seq, FinishReason reason, absl::Status status, GenerationEvent event = {});
  void PublishStats(int batch, int prefill_tokens, int decode_tokens, double seconds);
  // Appends decodes, then fair shares of the remaining budget for prompts, to step_ / in_step_.
  void BuildStep(int* decode_tokens, int* prefill_tokens);

  Backend* backend_;
  const Tokenizer* tokenizer_;
  SchedulerOptions options_;
  PrefixCache prefix_cache_;
  SessionManager sessions_;
  int64_t eos_token_id_;
  SchedulerStatsPublisher stats_;
  SchedulerStats counters_;  // scheduler thread only

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<GenerationRequest> incoming_;
  std::deque<std::function<void(SessionManager&)>> tasks_;
  bool stopping_ = false;
  std::string stop_reason_;     // set with stopping_
  std::atomic<int> queued_{0};  // incoming_ + waiting_
  std::atomic<int64_t> rejected_{0};
  std::thread thread_;

  // Scheduler thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::chrono::steady_clock::time_point next_ttl_check_;
  size_t prefill_rotation_ = 0;
  // Reused every step: the logits buffer keeps its pages, and growing it writes nothing.
  Step step_;
  std::vector<Sequence*> in_step_;
  StepOutput out_;
};

}  // namespace mambaserve
