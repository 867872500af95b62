// Per-request token sampling: penalties, temperature, top-k / top-p / min-p truncation and a
// request-owned seeded RNG, so a request's tokens depend only on its own logits and seed — never on
// what else ran in the same batch.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"

namespace mambaserve {

struct SamplingParams {
  int32_t max_tokens = 256;
  double temperature = 1.0;         // 0 = greedy (argmax, ties to the lowest id)
  int32_t top_k = 0;                // 0 = off
  double top_p = 1.0;               // 1 = off
  double min_p = 0.0;               // 0 = off
  double repetition_penalty = 1.0;  // 1 = off; applies to prompt and generated tokens
  double presence_penalty = 0.0;    // 0 = off; generated tokens only
  double frequency_penalty = 0.0;   // 0 = off; generated tokens only
  std::optional<uint64_t> seed;     // unset: drawn from std::random_device
  std::vector<std::string> stop;    // stop strings, matched on the detokenized output
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t logprobs = 0;  // top-N alternatives per token; 0 = none
  // Set: score the prompt too, each prompt token's log-probability given the tokens before it, with
  // the top N alternatives (0 = the token's own only). max_tokens may then be 0 (scoring only).
  std::optional<int32_t> prompt_logprobs;
};

struct SamplingLimits {
  int32_t max_tokens = 4096;
  int32_t max_logprobs = 20;
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  int32_t max_stop_token_ids = 64;  // checked for every generated token on the scheduler thread
};

// Checks every field; the message names the field, its value and the accepted range.
absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size,
                                    const SamplingLimits& limits = {});

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0;              // of the chosen token under the model's distribution
  std::vector<TokenLogprob> top;  // the `logprobs` most likely tokens, most likely first
};

// One per sequence; not thread-safe (the scheduler thread owns it).
class Sampler {
 public:
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt);

  // Picks the next token from `logits` [V] and records it for the penalties; the token is
  // math::kNonFiniteRow (and nothing is recorded) when `logits` holds a NaN or an infinity.
  SampledToken Sample(std::span<const float> logits);

  // Whether Sample always returns ArgMax(logits) and nothing else is needed: greedy, with no
  // penalties and no logprobs. The scheduler then asks the backend for the token only
  // (SequenceInput::token_only) and passes it to TakeArgMax instead of calling Sample.
  bool OnlyNeedsArgMax() const;
  // `token` is the backend's greedy token, math::kNonFiniteRow passed through.
  SampledToken TakeArgMax(int32_t token);

  // `token`'s log-probability under `logits` and the request's prompt_logprobs alternatives (raw
  // logits: no penalty or temperature). token is math::kNonFiniteRow for a NaN or infinite row.
  SampledToken ScorePromptToken(std::span<const float> logits, int32_t token);

  // Log-softmax of the raw logits (what `logprobs` reports), exposed for tests.
  static void LogSoftmax(std::span<const float> logits, std::vector<float>* out);

 private:
  // Fills result->logprob for result->token and result->top with the `top_n` likeliest tokens.
  void Score(std::span<const float> logits, int32_t top_n, SampledToken* result);
  void ApplyPenalties(std::vector<float>& logits) const;
  int32_t Draw(const std::vector<float>& logits);

  SamplingParams params_;
  std::mt19937_64 rng_;
  absl::flat_hash_set<int32_t> prompt_tokens_;
  absl::flat_hash_map<int32_t, int32_t> output_counts_;
  std::vector<float> work_;      // [V] penalised, tempered logits
  std::vector<float> logprobs_;  // [V]
  std::vector<int32_t> order_;   // [V] candidate ids
  std::vector<float> weights_;   // [V] exp(logit - max)
};

}  // namespace mambaserve
