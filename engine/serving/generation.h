// A generation request as the scheduler sees it (native types only), and the stream of events it
// produces. The stream is the hand-off between the scheduler thread (writer) and whoever reads the
// results (a gRPC stream reactor): bounded, so a slow reader pauses its own sequence rather than
// growing memory or stalling anyone else.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/serving/sampling.h"

namespace mambaserve {

enum class FinishReason { kNone, kLength, kStop, kEos, kCancelled };
const char* FinishReasonName(FinishReason reason);  // "length", "stop", "eos", "cancelled"

struct GenerationUsage {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t session_length =
      0;  // conversation tokens after this request (prompt + generated without a session)
  double time_to_first_token_s = -1;  // from acceptance; -1 if no token was produced
  double queue_time_s = -1;  // acceptance -> admission to a state slot; -1 if never admitted
};

// One step's output for one sequence. The last event of a stream has `final` set.
struct GenerationEvent {
  std::string text;  // new text: whole UTF-8 characters only
  std::vector<int32_t> token_ids;
  std::vector<SampledToken> logprobs;  // one per token id when the request asked for logprobs
  // With sampling.prompt_logprobs: prompt tokens [prompt_logprobs_begin, + size) scored given the
  // conversation before each. They all come before the first generated token; the prompt's first
  // token is scored only in a session turn (the session's last token predicts it).
  std::vector<SampledToken> prompt_logprobs;
  int64_t prompt_logprobs_begin = 0;
  bool final = false;
  FinishReason finish_reason = FinishReason::kNone;
  GenerationUsage usage;
  absl::Status status;  // final only: not OK when the request failed
};

class GenerationStream {
 public:
  explicit GenerationStream(int capacity = 16) : capacity_(capacity) {}

  // --- Reader side.
  // Called on the scheduler thread after an event is pushed; must not block. Cleared (nullptr)
  // before the reader goes away; clearing waits for a running call to return.
  void SetListener(std::function<void()> listener);
  std::optional<GenerationEvent> Pop();
  bool HasEvents() const;
  // Asks the scheduler to drop the request at its next step (client cancel, disconnect, deadline).
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }

  // --- Scheduler side.
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  bool HasRoom() const;
  // Pushes even when full for a final event, so a request can always end.
  void Push(GenerationEvent event);

  // --- Owner side (before the request is submitted).
  // The next final event goes to `hook` (on the scheduler thread; it must not block) instead of
  // the reader; the hook pushes it, possibly later, once what must precede it is done (a session
  // store write). One-shot.
  void InterceptFinal(std::function<void(GenerationEvent)> hook);

 private:
  const int capacity_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  std::deque<GenerationEvent> events_;
  std::function<void(GenerationEvent)> final_hook_;  // guarded by mu_
  std::mutex listener_mu_;
  std::function<void()> listener_;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // validated ids, at least one unless the session has pending tokens
  SamplingParams sampling;
  std::string session_id;  // empty: no session
  std::optional<std::chrono::steady_clock::time_point> deadline;
  std::shared_ptr<GenerationStream> stream;
};

}  // namespace mambaserve
