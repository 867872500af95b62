#include "engine/serving/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/backend/greedy.h"
#include "kernels/mamba_math.h"

namespace mambaserve {
namespace {

absl::Status OutOfRange(const char* field, double value, const char* range) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " = ", value, " is out of range: must be ", range));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size,
                                    const SamplingLimits& limits) {
  // Only a request that scores its prompt may generate nothing.
  const int32_t min_tokens = p.prompt_logprobs ? 0 : 1;
  if (p.max_tokens < min_tokens || p.max_tokens > limits.max_tokens) {
    return OutOfRange(
        "max_tokens", p.max_tokens,
        absl::StrCat("in [", min_tokens, ", ", limits.max_tokens, "]",
                     min_tokens == 1 ? " (0 only with prompt_logprobs: scoring only)" : "")
            .c_str());
  }
  if (p.prompt_logprobs && (*p.prompt_logprobs < 0 || *p.prompt_logprobs > limits.max_logprobs)) {
    return OutOfRange("prompt_logprobs", *p.prompt_logprobs,
                      absl::StrCat("in [0, ", limits.max_logprobs, "]").c_str());
  }
  if (!(p.temperature >= 0 && p.temperature <= 100))
    return OutOfRange("temperature", p.temperature, "in [0, 100] (0 = greedy)");
  if (p.top_k < 0) return OutOfRange("top_k", p.top_k, ">= 0 (0 = off)");
  if (!(p.top_p > 0 && p.top_p <= 1)) return OutOfRange("top_p", p.top_p, "in (0, 1] (1 = off)");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return OutOfRange("min_p", p.min_p, "in [0, 1] (0 = off)");
  if (!(p.repetition_penalty > 0 && p.repetition_penalty <= 10)) {
    return OutOfRange("repetition_penalty", p.repetition_penalty, "in (0, 10] (1 = off)");
  }
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) {
    return OutOfRange("presence_penalty", p.presence_penalty, "in [-2, 2] (0 = off)");
  }
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) {
    return OutOfRange("frequency_penalty", p.frequency_penalty, "in [-2, 2] (0 = off)");
  }
  if (p.logprobs < 0 || p.logprobs > limits.max_logprobs) {
    return OutOfRange("logprobs", p.logprobs,
                      absl::StrCat("in [0, ", limits.max_logprobs, "]").c_str());
  }
  if (static_cast<int64_t>(p.stop.size()) > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("stop has ", p.stop.size(), " strings; at most ",
                                                   limits.max_stop_strings, " are allowed"));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty())
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is empty"));
    if (static_cast<int64_t>(p.stop[i].size()) > limits.max_stop_string_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is ", p.stop[i].size(),
                                                     " bytes; at most ",
                                                     limits.max_stop_string_bytes, " are allowed"));
    }
  }
  if (static_cast<int64_t>(p.stop_token_ids.size()) > limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrCat("stop_token_ids has ", p.stop_token_ids.size(),
                                                   " ids; at most ", limits.max_stop_token_ids,
                                                   " are allowed"));
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    if (p.stop_token_ids[i] < 0 || p.stop_token_ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids[", i, "] = ", p.stop_token_ids[i],
                       " is not a token id: must be in [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt) : params_(params) {
  rng_.seed(params.seed.has_value()
                ? *params.seed
                : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}());
  if (params_.repetition_penalty != 1.0) prompt_tokens_.insert(prompt.begin(), prompt.end());
}

void Sampler::LogSoftmax(std::span<const float> logits, std::vector<float>* out) {
  out->resize(logits.size());
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v - max));
  const float log_sum = static_cast<float>(std::log(sum)) + max;
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = logits[i] - log_sum;
}

void Sampler::ApplyPenalties(std::vector<float>& logits) const {
  const float rep = static_cast<float>(params_.repetition_penalty);
  if (rep != 1.0f) {
    auto penalise = [&](int32_t t) {
      logits[t] = logits[t] > 0 ? logits[t] / rep : logits[t] * rep;
    };
    for (int32_t t : prompt_tokens_) penalise(t);
    for (const auto& [t, n] : output_counts_) {
      if (!prompt_tokens_.contains(t)) penalise(t);
    }
  }
  if (params_.presence_penalty != 0 || params_.frequency_penalty != 0) {
    for (const auto& [t, n] : output_counts_) {
      logits[t] -= static_cast<float>(params_.presence_penalty + params_.frequency_penalty * n);
    }
  }
}

int32_t Sampler::Draw(const std::vector<float>& logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const float max = *std::max_element(logits.begin(), logits.end());
  // Unnormalised probabilities; float exp is ample for sampling weights (relative error ~1e-7).
  weights_.resize(vocab);
  double mass = 0;
  for (int32_t i = 0; i < vocab; ++i) mass += weights_[i] = std::exp(logits[i] - max);
  // 53 random bits → a double in [0, 1): identical on every platform, unlike the distributions.
  const double u01 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;

  const bool top_k = params_.top_k > 0 && params_.top_k < vocab;
  if (!top_k && params_.top_p >= 1.0) {
    // No ordering needed (the common case, and a full sort of a 65k vocabulary per token would
    // dominate the scheduler thread): min-p keeps w_i >= min_p * w_max, with w_max = 1.
    double total = 0;
    for (int32_t i = 0; i < vocab; ++i) {
      if (weights_[i] < params_.min_p) weights_[i] = 0.0f;
      total += weights_[i];
    }
    const double u = u01 * total;
    double cumulative = 0;
    int32_t last = 0;
    for (int32_t i = 0; i < vocab; ++i) {
      if (weights_[i] == 0.0f) continue;
      cumulative += weights_[i];
      last = i;
      if (u < cumulative) return i;
    }
    return last;
  }

  // Candidates ordered by logit, ties to the lower id, so the draw never depends on sort stability.
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int32_t keep = vocab;
  double norm = mass;  // what the kept candidates' probabilities are relative to
  if (top_k) {
    keep = params_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), better);
    norm = 0;
    for (int32_t i = 0; i < keep; ++i) norm += weights_[order_[i]];  // top-k renormalises
  } else {
    // top-p alone: sort a growing prefix until it holds top_p of the mass.
    int32_t sorted = std::min(vocab, 256);
    for (;;) {
      std::partial_sort(order_.begin(), order_.begin() + sorted, order_.end(), better);
      double covered = 0;
      for (int32_t i = 0; i < sorted; ++i) covered += weights_[order_[i]];
      if (covered >= params_.top_p * mass || sorted == vocab) break;
      sorted = std::min(vocab, sorted * 4);
    }
    keep = sorted;
  }
  std::vector<double> probs(keep);  // [keep]
  for (int32_t i = 0; i < keep; ++i) probs[i] = weights_[order_[i]] / norm;
  if (params_.top_p < 1.0) {
    double cumulative = 0;
    int32_t n = 0;
    while (n < keep) {
      cumulative += probs[n++];
      if (cumulative >= params_.top_p) break;
    }
    keep = std::max(n, 1);
  }
  if (params_.min_p > 0) {
    const double threshold = params_.min_p * probs[0];
    int32_t n = 1;
    while (n < keep && probs[n] >= threshold) ++n;
    keep = n;
  }
  double total = 0;
  for (int32_t i = 0; i < keep; ++i) total += probs[i];
  const double u = u01 * total;
  double cumulative = 0;
  for (int32_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (u < cumulative) return order_[i];
  }
  return order_[keep - 1];
}

SampledToken Sampler::Sample(std::span<const float> logits) {
  SampledToken result;
  // Checked while copying (one pass): no token is meaningful from a NaN or infinite row.
  work_.resize(logits.size());
  bool finite = true;
  for (size_t i = 0; i < logits.size(); ++i) {
    work_[i] = logits[i];
    finite &= math::IsFinite(logits[i]);
  }
  if (!finite) {
    result.token = math::kNonFiniteRow;
    return result;
  }
  ApplyPenalties(work_);
  if (params_.temperature == 0) {
    result.token = ArgMax(work_);
  } else {
    const float inv_t = static_cast<float>(1.0 / params_.temperature);
    for (float& v : work_) v *= inv_t;
    result.token = Draw(work_);
  }
  if (params_.logprobs > 0) Score(logits, params_.logprobs, &result);
  ++output_counts_[result.token];
  return result;
}

SampledToken Sampler::ScorePromptToken(std::span<const float> logits, int32_t token) {
  SampledToken result;
  for (float v : logits) {
    if (!math::IsFinite(v)) {
      result.token = math::kNonFiniteRow;
      return result;
    }
  }
  result.token = token;
  Score(logits, params_.prompt_logprobs.value_or(0), &result);
  return result;
}

void Sampler::Score(std::span<const float> logits, int32_t top_n, SampledToken* result) {
  LogSoftmax(logits, &logprobs_);
  result->logprob = logprobs_[result->token];
  if (top_n == 0) return;
  const int32_t n = std::min<int32_t>(top_n, static_cast<int32_t>(logprobs_.size()));
  order_.resize(logprobs_.size());
  std::iota(order_.begin(), order_.end(), 0);
  std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), [&](int32_t a, int32_t b) {
    return logprobs_[a] > logprobs_[b] || (logprobs_[a] == logprobs_[b] && a < b);
  });
  for (int32_t i = 0; i < n; ++i) result->top.push_back({order_[i], logprobs_[order_[i]]});
}

bool Sampler::OnlyNeedsArgMax() const {
  return params_.temperature == 0 && params_.logprobs == 0 && params_.repetition_penalty == 1.0 &&
         params_.presence_penalty == 0.0 && params_.frequency_penalty == 0.0;
}

SampledToken Sampler::TakeArgMax(int32_t token) {
  SampledToken result;
  result.token = token;
  if (token != math::kNonFiniteRow) ++output_counts_[token];
  return result;
}

}  // namespace mambaserve
