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

}  // namespace mambaserve::testing
