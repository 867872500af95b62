// Greedy generation on one slot: one prefill of the prompt, then decode steps, argmax each time.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace mambaserve {

struct GreedyResult {
  std::vector<float> last_logits;  // [V] at the last prompt position
  std::vector<int32_t> generated;
};

// Index of the largest value; ties go to the lowest index, and NaN is never preferred to a number
// (math::ArgMaxPrefers, the order the CUDA argmax kernel reduces with too).
int32_t ArgMax(std::span<const float> values);

// The greedy token of a logits row: ArgMax, or math::kNonFiniteRow (-1) when the row holds a NaN
// or an infinity, for which no token is meaningful. What backends report in StepOutput::argmax.
int32_t GreedyToken(std::span<const float> logits);
// The error for a row GreedyToken refused.
absl::Status NonFiniteLogitsError();

absl::StatusOr<GreedyResult> GreedyGenerate(Backend& backend, int slot,
                                            std::span<const int32_t> prompt, int num_generate);

}  // namespace mambaserve
