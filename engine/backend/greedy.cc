#include "engine/backend/greedy.h"

#include <limits>

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
  // One vectorised pass for finiteness and the maximum, then the first index holding it: for a
  // row of finite values that is exactly ArgMax's choice (the largest, ties to the lowest index;
  // -0 and +0 compare equal there as here), at a fraction of the cost of its compare chain.
  const float* values = logits.data();
  const size_t n = logits.size();
  float best = -std::numeric_limits<float>::infinity();
  int finite = 1;
#pragma omp simd reduction(max : best) reduction(& : finite)
  for (size_t i = 0; i < n; ++i) {
    finite &= math::IsFinite(values[i]) ? 1 : 0;
    best = values[i] > best ? values[i] : best;
  }
  if (!finite) return math::kNonFiniteRow;
  for (size_t i = 0; i < n; ++i) {
    if (values[i] == best) return static_cast<int32_t>(i);
  }
  return 0;  // an empty row, as ArgMax
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
