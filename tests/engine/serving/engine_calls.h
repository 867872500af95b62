// Blocking forms of the Engine's asynchronous calls, for tests.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace mambaserve {

// Waits for an asynchronous engine call's result.
template <typename T>
class Await {
 public:
  Engine::Callback<T> callback() {
    return [this](absl::StatusOr<T> result) {
      thread_ = std::this_thread::get_id();
      promise_.set_value(std::move(result));
    };
  }
  absl::StatusOr<T> get() { return promise_.get_future().get(); }
  std::thread::id thread() const { return thread_; }

 private:
  std::promise<absl::StatusOr<T>> promise_;
  std::thread::id thread_;
};

// Generates greedily (temperature 0); returns the tokens, or the failure of the submission or of
// the stream's final event.
inline absl::StatusOr<std::vector<int32_t>> GenerateGreedy(Engine& engine,
                                                           std::vector<int32_t> prompt,
                                                           int max_tokens, std::string session = "",
                                                           int logprobs = 0) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.sampling.logprobs = logprobs;
  r.sampling.max_tokens = max_tokens;
  r.session_id = std::move(session);
  r.stream = std::make_shared<GenerationStream>(1 << 16);
  auto stream = r.stream;
  if (absl::Status s = engine.Submit(std::move(r)); !s.ok()) return s;
  std::vector<int32_t> tokens;
  for (;;) {
    while (auto e = stream->Pop()) {
      tokens.insert(tokens.end(), e->token_ids.begin(), e->token_ids.end());
      if (e->final) {
        if (!e->status.ok()) return e->status;
        return tokens;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace mambaserve
