// Helpers shared by the backend tests (CPU and CUDA): random prompts, logit comparisons, and the
// bad-step checks every Backend must pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/greedy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mambaserve::testing {

inline std::vector<int32_t> RandomTokens(int n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

inline float MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// `backend` has at least 2 slots and a vocabulary of 512: out-of-range slot, out-of-vocabulary
// token, a slot twice in one step, an empty sequence and a wrong-size state are all refused.
inline void ExpectRejectsBadSteps(Backend& backend) {
  const std::vector<int32_t> ok = {1, 2}, bad = {1, 512}, empty;
  StepOutput out;
  Step s1{{{backend.num_slots(), ok, true, true}}};
  EXPECT_EQ(backend.Forward(s1, &out).code(), absl::StatusCode::kOutOfRange);
  Step s2{{{0, bad, true, true}}};
  EXPECT_THAT(backend.Forward(s2, &out).message(), ::testing::HasSubstr("token id 512"));
  Step s3{{{0, ok, true, true}, {0, ok, true, true}}};
  EXPECT_THAT(backend.Forward(s3, &out).message(), ::testing::HasSubstr("twice"));
  Step s4{{{0, empty, true, true}}};
  EXPECT_FALSE(backend.Forward(s4, &out).ok());
  std::vector<uint8_t> wrong_size(10);
  EXPECT_FALSE(backend.WriteSlot(0, wrong_size).ok());
  EXPECT_EQ(backend.ReadSlot(backend.num_slots(), wrong_size).code(),
            absl::StatusCode::kOutOfRange);
}

// How far a sequence's logits move when it runs inside a full batch instead of alone.
struct BatchInvariance {
  float max_logit_diff = 0;   // over every compared row
  int greedy_mismatches = 0;  // rows whose greedy token differs
  int rows_compared = 0;
};

// `tested` sequences (prompts of 3, 7, 11, ... tokens, then `steps` one-token decode steps with the
// same given tokens) run once alone, each in slot 0 of `alone`, and once inside a full batch of
// `batched`: every slot busy, the tested sequences in its highest slots and last rows, the others
// (fillers of other lengths) before them; one prefill step for all, then decode steps for all.
// Compares every tested logits row of the two runs.
inline BatchInvariance CompareAloneAndInFullBatch(Backend& alone, Backend& batched, int tested,
                                                  int steps) {
  const int64_t vocab = alone.config().vocab_size;
  const int slots = batched.num_slots();
  EXPECT_GT(slots, tested);
  std::vector<std::vector<int32_t>> prompts, fillers;
  std::vector<std::vector<int32_t>> decode_tokens;  // [tested + fillers][steps]
  for (int i = 0; i < tested; ++i)
    prompts.push_back(RandomTokens(3 + 4 * i, vocab, 500 + static_cast<uint32_t>(i)));
  for (int i = 0; i < slots - tested; ++i)
    fillers.push_back(RandomTokens(1 + (5 * i) % 13, vocab, 700 + static_cast<uint32_t>(i)));
  for (int i = 0; i < slots; ++i)
    decode_tokens.push_back(RandomTokens(steps, vocab, 900 + static_cast<uint32_t>(i)));

  // alone_rows[i][s]: tested sequence i's logits after step s (0: the prompt).
  std::vector<std::vector<std::vector<float>>> alone_rows(tested);
  for (int i = 0; i < tested; ++i) {
    for (int s = 0; s <= steps; ++s) {
      Step step;
      std::span<const int32_t> tokens =
          s == 0 ? std::span<const int32_t>(prompts[i]) : std::span(&decode_tokens[i][s - 1], 1);
      step.sequences.push_back({0, tokens, /*start_fresh=*/s == 0, true});
      StepOutput out;
      const absl::Status status = alone.Forward(step, &out);
      EXPECT_TRUE(status.ok()) << status;
      if (!status.ok()) return {};
      alone_rows[i].emplace_back(out.Row(0).begin(), out.Row(0).end());
    }
  }

  BatchInvariance result;
  for (int s = 0; s <= steps; ++s) {
    Step step;
    for (int f = 0; f < slots - tested; ++f) {
      std::span<const int32_t> tokens = s == 0 ? std::span<const int32_t>(fillers[f])
                                               : std::span(&decode_tokens[tested + f][s - 1], 1);
      step.sequences.push_back({f, tokens, s == 0, true});
    }
    for (int i = 0; i < tested; ++i) {
      std::span<const int32_t> tokens =
          s == 0 ? std::span<const int32_t>(prompts[i]) : std::span(&decode_tokens[i][s - 1], 1);
      step.sequences.push_back({slots - 1 - i, tokens, s == 0, true});
    }
    StepOutput out;
    const absl::Status status = batched.Forward(step, &out);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) return result;
    for (int i = 0; i < tested; ++i) {
      const std::span<const float> row = out.Row(slots - tested + i);
      const std::vector<float>& want = alone_rows[i][s];
      result.max_logit_diff = std::max(result.max_logit_diff, MaxAbsDiff(row, want));
      if (ArgMax(row) != ArgMax(want)) ++result.greedy_mismatches;
      ++result.rows_compared;
    }
  }
  return result;
}

}  // namespace mambaserve::testing
