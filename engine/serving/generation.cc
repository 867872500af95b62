#include "engine/serving/generation.h"

namespace mambaserve {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "?";
}

void GenerationStream::SetListener(std::function<void()> listener) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  listener_ = std::move(listener);
}

std::optional<GenerationEvent> GenerationStream::Pop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.empty()) return std::nullopt;
  GenerationEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

bool GenerationStream::HasEvents() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !events_.empty();
}

bool GenerationStream::HasRoom() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(events_.size()) < capacity_;
}

void GenerationStream::InterceptFinal(std::function<void(GenerationEvent)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  final_hook_ = std::move(hook);
}

void GenerationStream::Push(GenerationEvent event) {
  std::function<void(GenerationEvent)> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (event.final && final_hook_) {
      hook = std::move(final_hook_);
      final_hook_ = nullptr;
    } else {
      events_.push_back(std::move(event));
    }
  }
  if (hook) {
    hook(std::move(event));
    return;
  }
  std::lock_guard<std::mutex> lock(listener_mu_);
  if (listener_) listener_();
}

}  // namespace mambaserve
