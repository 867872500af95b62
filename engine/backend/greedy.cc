#include "engine/backend/greedy.h"

#include "engine/base/status_macros.h"
#include "kernels/mamba_math.h"

namespace mambaserve {

int32_t ArgMax(std::span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (math::ArgMaxPrefers(values[i], static_cast<int>(i), values[best], best)) {
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

int32_t GreedyToken(std::span<const float> logits) {
  for (float v : logits) {
    if (!math::IsFinite(v)) return math::kNonFiniteRow;
  }
  return ArgMax(logits);
}

absl::Status NonFiniteLogitsError() {
  return absl::InternalError(
      "the model produced non-finite logits (NaN or infinity): its state or weights are out of "
      "float range");
}

absl::StatusOr<GreedyResult> GreedyGenerate(Backend& backend, int slot,
                                            std::span<const int32_t> prompt, int num_generate) {
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  GreedyResult result;
  Step step;
  step.sequences.push_back({slot, prompt, /*start_fresh=*/true, /*want_logits=*/true});
  StepOutput out;
  RETURN_IF_ERROR(backend.Forward(step, &out));
  result.last_logits.assign(out.Row(0).begin(), out.Row(0).end());
  int32_t token = GreedyToken(out.Row(0));
  for (int i = 0; i < num_generate; ++i) {
    if (token == math::kNonFiniteRow) return NonFiniteLogitsError();
    result.generated.push_back(token);
    if (i + 1 == num_generate) break;
    step.sequences[0] = {slot, std::span<const int32_t>(&token, 1), false, true,
                         /*token_only=*/true};
    RETURN_IF_ERROR(backend.Forward(step, &out));
    token = out.argmax[0];
  }
  return result;
}

}  // namespace mambaserve
