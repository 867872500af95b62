// Sampling: validation messages, each parameter's effect on the candidate set, seeded determinism.
#include "engine/serving/sampling.h"

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "engine/backend/greedy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/mamba_math.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::map<int32_t, int> Histogram(SamplingParams params, const std::vector<float>& logits,
                                 int draws) {
  params.seed = 1234;
  Sampler sampler(params, {});
  std::map<int32_t, int> counts;
  // One sampler, penalties off: each draw is independent of the earlier ones.
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).token];
  return counts;
}

TEST(SamplingValidationTest, EachFieldOutOfRangeNamesTheField) {
  struct Case {
    const char* field;
    void (*mutate)(SamplingParams&);
  };
  const Case cases[] = {
      {"max_tokens", [](SamplingParams& p) { p.max_tokens = 0; }},
      {"max_tokens", [](SamplingParams& p) { p.max_tokens = 100000; }},
      {"temperature", [](SamplingParams& p) { p.temperature = -0.5; }},
      {"temperature", [](SamplingParams& p) { p.temperature = NAN; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.5; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.1; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.1; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 3; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -3; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = 21; }},
      {"prompt_logprobs", [](SamplingParams& p) { p.prompt_logprobs = 21; }},
      {"prompt_logprobs", [](SamplingParams& p) { p.prompt_logprobs = -1; }},
      {"max_tokens",
       [](SamplingParams& p) {
         p.prompt_logprobs = 0;
         p.max_tokens = -1;
       }},
      {"stop[0]", [](SamplingParams& p) { p.stop = {""}; }},
      {"stop_token_ids[1]",
       [](SamplingParams& p) {
         p.stop_token_ids = {1, 600};
       }},
      {"stop_token_ids has 65 ids", [](SamplingParams& p) { p.stop_token_ids.assign(65, 1); }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    absl::Status s = ValidateSamplingParams(p, 512);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << c.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field));
  }
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 512).ok());
  SamplingParams scoring_only;
  scoring_only.max_tokens = 0;  // only with prompt_logprobs
  scoring_only.prompt_logprobs = 0;
  EXPECT_TRUE(ValidateSamplingParams(scoring_only, 512).ok());
}

TEST(SamplerTest, GreedyPicksArgmaxWithTiesToLowestId) {
  SamplingParams p;
  p.temperature = 0;
  Sampler sampler(p, {});
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.1f, 2.0f, 2.0f, -1.0f}).token, 1);
}

// A NaN or an infinity anywhere in the row gives no token, on every sampling path.
TEST(SamplerTest, NonFiniteLogitsGiveNoToken) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const std::vector<float>& logits :
       {std::vector<float>{0.5f, nan, 2.0f}, {0.5f, inf, 2.0f}, {-inf, 0.5f, 2.0f}}) {
    for (double temperature : {0.0, 0.7}) {
      SamplingParams p;
      p.temperature = temperature;
      p.logprobs = 2;
      Sampler sampler(p, {});
      const SampledToken sampled = sampler.Sample(logits);
      EXPECT_EQ(sampled.token, math::kNonFiniteRow);
      EXPECT_TRUE(sampled.top.empty());
    }
    EXPECT_EQ(GreedyToken(logits), math::kNonFiniteRow);
  }
  EXPECT_EQ(GreedyToken(std::vector<float>{0.5f, 3e38f, -3e38f}), 1);  // huge is still finite
  SamplingParams greedy;
  greedy.temperature = 0;
  EXPECT_EQ(Sampler(greedy, {}).TakeArgMax(math::kNonFiniteRow).token, math::kNonFiniteRow);
}

TEST(SamplerTest, OnlyPlainGreedyNeedsJustTheArgMax) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_TRUE(Sampler(p, {}).OnlyNeedsArgMax());
  const std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  Sampler sampler(p, {});
  EXPECT_EQ(sampler.TakeArgMax(1).token, sampler.Sample(logits).token);
  for (auto change : std::vector<std::function<void(SamplingParams&)>>{
           [](SamplingParams& q) { q.temperature = 0.5; },
           [](SamplingParams& q) { q.logprobs = 1; },
           [](SamplingParams& q) { q.repetition_penalty = 1.1; },
           [](SamplingParams& q) { q.presence_penalty = 0.5; },
           [](SamplingParams& q) { q.frequency_penalty = 0.5; }}) {
    SamplingParams q = p;
    change(q);
    EXPECT_FALSE(Sampler(q, {}).OnlyNeedsArgMax());
  }
  // top-k / top-p / min-p do not change a greedy pick.
  p.top_k = 3;
  p.top_p = 0.5;
  p.min_p = 0.1;
  EXPECT_TRUE(Sampler(p, {}).OnlyNeedsArgMax());
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const auto logits = LogitsFromProbs({0.2, 0.2, 0.2, 0.2, 0.2});
  auto run = [&](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    Sampler sampler(p, {});
    std::vector<int32_t> out;
    for (int i = 0; i < 32; ++i) out.push_back(sampler.Sample(logits).token);
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(SamplerTest, TemperatureOneMatchesTheDistribution) {
  SamplingParams p;
  const auto counts = Histogram(p, LogitsFromProbs({0.5, 0.3, 0.2}), 20000);
  EXPECT_NEAR(counts.at(0) / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts.at(1) / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(counts.at(2) / 20000.0, 0.2, 0.02);
}

TEST(SamplerTest, LowTemperatureSharpensHighTemperatureFlattens) {
  const auto logits = LogitsFromProbs({0.5, 0.3, 0.2});
  SamplingParams cold;
  cold.temperature = 0.1;
  SamplingParams hot;
  hot.temperature = 10;
  EXPECT_GT(Histogram(cold, logits, 4000)[0], 3900);
  EXPECT_LT(Histogram(hot, logits, 4000)[0], 1700);  // near uniform: ~1333
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  SamplingParams p;
  p.top_k = 2;
  p.temperature = 5;
  const auto counts = Histogram(p, LogitsFromProbs({0.1, 0.4, 0.3, 0.2}), 2000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_TRUE(counts.count(1) && counts.count(2));
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  SamplingParams p;
  p.top_p = 0.6;  // 0.4 + 0.3 >= 0.6
  const auto counts = Histogram(p, LogitsFromProbs({0.1, 0.4, 0.3, 0.2}), 2000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_TRUE(counts.count(1) && counts.count(2));
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplingParams p;
  p.min_p = 0.6;  // keeps p >= 0.24: ids 1 (0.4) and 2 (0.3)
  const auto counts = Histogram(p, LogitsFromProbs({0.1, 0.4, 0.3, 0.2}), 2000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_TRUE(counts.count(1) && counts.count(2));
}

TEST(SamplerTest, RepetitionPenaltyDemotesPromptTokens) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0;
  const std::vector<int32_t> prompt = {0};
  Sampler penalised(p, prompt);
  // Logit 2.0 for id 0 becomes 1.0 < 1.5.
  EXPECT_EQ(penalised.Sample(std::vector<float>{2.0f, 1.5f, 0.0f}).token, 1);
  p.repetition_penalty = 1.0;
  Sampler plain(p, prompt);
  EXPECT_EQ(plain.Sample(std::vector<float>{2.0f, 1.5f, 0.0f}).token, 0);
}

TEST(SamplerTest, PresencePenaltyDemotesGeneratedTokensOnce) {
  SamplingParams p;
  p.temperature = 0;
  p.presence_penalty = 1.0;
  Sampler sampler(p, {});
  const std::vector<float> logits = {2.0f, 1.5f, 0.0f};
  EXPECT_EQ(sampler.Sample(logits).token, 0);
  EXPECT_EQ(sampler.Sample(logits).token, 1);  // 2.0 - 1.0 < 1.5
  EXPECT_EQ(sampler.Sample(logits).token, 0);  // 1.0 vs 1.5 - 1.0: presence is not cumulative
}

TEST(SamplerTest, FrequencyPenaltyGrowsWithCount) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.3;
  Sampler sampler(p, {});
  const std::vector<float> logits = {2.0f, 1.5f, 0.0f};
  std::vector<int32_t> out;
  for (int i = 0; i < 4; ++i) out.push_back(sampler.Sample(logits).token);
  // id 0: 2.0, 1.7, 1.4 (< 1.5) -> then id 1 takes over.
  EXPECT_EQ(out, (std::vector<int32_t>{0, 0, 1, 0}));
}

TEST(SamplerTest, LogprobsReportTopNAndTheChosenToken) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 3;
  Sampler sampler(p, {});
  const auto logits = LogitsFromProbs({0.1, 0.4, 0.3, 0.2});
  const SampledToken t = sampler.Sample(logits);
  EXPECT_EQ(t.token, 1);
  EXPECT_NEAR(t.logprob, std::log(0.4), 1e-5);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].token, 1);
  EXPECT_EQ(t.top[1].token, 2);
  EXPECT_EQ(t.top[2].token, 3);
  EXPECT_NEAR(t.top[2].logprob, std::log(0.2), 1e-5);
}

}  // namespace
}  // namespace mambaserve
