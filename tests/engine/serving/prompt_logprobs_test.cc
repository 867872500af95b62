// Prompt scoring (SamplingParams::prompt_logprobs): every prompt token's log-probability given the
// conversation before it, checked against the same model run token by token (decode steps, one
// logits row each: another path through the backend) and a float64 log-softmax; scoring-only
// requests; sessions whose scored turns chain into one conversation.
#include <cmath>
#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend_factory.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/scheduler_fixture.h"

namespace mambaserve {
namespace {

class PromptLogprobsTest : public SchedulerTest {
 protected:
  // log p(tokens[i] | tokens[0, i)) for i >= 1, from decode steps on a fresh CPU backend, with the
  // log-softmax in float64.
  std::vector<double> TokenByToken(const std::vector<int32_t>& tokens) {
    BackendOptions options;
    options.kind = BackendKind::kCpu;
    options.num_slots = 1;
    options.num_threads = 1;
    std::unique_ptr<Backend> backend = std::move(*CreateBackend(*model_, options));
    std::vector<double> logprobs;
    StepOutput out;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      Step step;
      step.sequences.push_back({0, std::span<const int32_t>(&tokens[i], 1), i == 0, true, false});
      EXPECT_TRUE(backend->Forward(step, &out).ok());
      const std::span<const float> row = out.Row(0);
      double max = row[0], sum = 0;
      for (float v : row) max = std::max<double>(max, v);
      for (float v : row) sum += std::exp(static_cast<double>(v) - max);
      logprobs.push_back(static_cast<double>(row[tokens[i + 1]]) - max - std::log(sum));
    }
    return logprobs;
  }

  static SamplingParams Scoring(int top_n, int max_tokens = 0) {
    SamplingParams p = Greedy(max_tokens);
    p.prompt_logprobs = top_n;
    return p;
  }

  static std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
};

TEST_F(PromptLogprobsTest, EqualTokenByTokenLogitsForALongPromptReadInChunks) {
  auto s = Make(4);
  // 300 tokens: more than one step's scoring share, so several chunks and events.
  const std::vector<int32_t> prompt = Prompt(300, 1);
  Result r = RunAll(*s, {Submit(*s, prompt, Scoring(3))})[0];
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_TRUE(r.tokens.empty());
  EXPECT_EQ(r.usage.generated_tokens, 0);
  EXPECT_GT(r.events, 3);
  ASSERT_EQ(r.prompt_logprobs_begin, 1);  // no session: the first token has no context
  const std::vector<double> want = TokenByToken(prompt);
  ASSERT_EQ(r.prompt_logprobs.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const SampledToken& got = r.prompt_logprobs[i];
    EXPECT_EQ(got.token, prompt[i + 1]);
    EXPECT_NEAR(got.logprob, want[i], 1e-4) << "prompt token " << i + 1;
    ASSERT_EQ(got.top.size(), 3u);
    EXPECT_GE(got.top[0].logprob, got.top[1].logprob);
    EXPECT_GE(got.top[1].logprob, got.top[2].logprob);
    EXPECT_GE(got.top[0].logprob, got.logprob);  // the likeliest is at least as likely
  }
}

TEST_F(PromptLogprobsTest, BatchedScoringEqualsScoringAlone) {
  auto s = Make(8);
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < 6; ++i)
    streams.push_back(Submit(*s, Prompt(20 + 37 * i, 10 + i), Scoring(0, i % 2 == 0 ? 0 : 4)));
  const std::vector<Result> batched = RunAll(*s, streams);
  for (int i = 0; i < 6; ++i) {
    auto alone = Make(1);
    Result a = RunAll(
        *alone, {Submit(*alone, Prompt(20 + 37 * i, 10 + i), Scoring(0, i % 2 == 0 ? 0 : 4))})[0];
    ASSERT_EQ(batched[i].prompt_logprobs.size(), a.prompt_logprobs.size()) << "request " << i;
    for (size_t k = 0; k < a.prompt_logprobs.size(); ++k)
      EXPECT_NEAR(batched[i].prompt_logprobs[k].logprob, a.prompt_logprobs[k].logprob, 1e-5);
    EXPECT_EQ(batched[i].tokens, a.tokens) << "request " << i;
  }
}

TEST_F(PromptLogprobsTest, ComeBeforeTheFirstGeneratedTokenWhichIsUnchanged) {
  auto s = Make(2);
  const std::vector<int32_t> prompt = Prompt(50, 3);
  Result scored = RunAll(*s, {Submit(*s, prompt, Scoring(2, 8))})[0];
  Result plain = RunAll(*s, {Submit(*s, prompt, Greedy(8))})[0];
  ASSERT_TRUE(scored.status.ok()) << scored.status;
  EXPECT_EQ(scored.prompt_logprobs.size(), prompt.size() - 1);
  EXPECT_LT(scored.last_prompt_logprobs_event, scored.first_token_event);
  EXPECT_EQ(scored.tokens, plain.tokens);
  EXPECT_TRUE(plain.prompt_logprobs.empty());
}

TEST_F(PromptLogprobsTest, ScoredSessionTurnsChainIntoOneConversation) {
  auto s = Make(2);
  const std::vector<int32_t> a = Prompt(40, 4), b = Prompt(30, 5), c = Prompt(10, 6);
  ASSERT_TRUE(s->sessions().Create("conv").ok());
  // Scoring-only turns: the state reads all but each turn's last token, which stays pending and
  // predicts the next turn's first token.
  Result ra = RunAll(*s, {Submit(*s, a, Scoring(0), "conv")})[0];
  Result rb = RunAll(*s, {Submit(*s, b, Scoring(0), "conv")})[0];
  ASSERT_TRUE(ra.status.ok() && rb.status.ok()) << ra.status << rb.status;
  EXPECT_EQ(ra.prompt_logprobs_begin, 1);
  EXPECT_EQ(rb.prompt_logprobs_begin, 0);  // scored after the conversation so far
  EXPECT_EQ(rb.usage.session_length, 70);
  const std::vector<double> whole = TokenByToken(Concat(a, b));
  ASSERT_EQ(ra.prompt_logprobs.size() + rb.prompt_logprobs.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    const SampledToken& got = i < ra.prompt_logprobs.size()
                                  ? ra.prompt_logprobs[i]
                                  : rb.prompt_logprobs[i - ra.prompt_logprobs.size()];
    EXPECT_NEAR(got.logprob, whole[i], 1e-4) << "conversation token " << i + 1;
  }
  // A generating turn after them continues the same conversation.
  Result rc = RunAll(*s, {Submit(*s, c, Greedy(6), "conv")})[0];
  Result once = RunAll(*s, {Submit(*s, Concat(Concat(a, b), c), Greedy(6))})[0];
  EXPECT_EQ(rc.tokens, once.tokens);
  EXPECT_EQ(rc.usage.session_length, 86);
}

TEST_F(PromptLogprobsTest, ScoringOneTokenRunsNothingAndLeavesItPending) {
  auto s = Make(1);
  Result alone = RunAll(*s, {Submit(*s, {7}, Scoring(0))})[0];
  EXPECT_TRUE(alone.status.ok()) << alone.status;
  EXPECT_TRUE(alone.prompt_logprobs.empty());
  ASSERT_TRUE(s->sessions().Create("one").ok());
  Result first = RunAll(*s, {Submit(*s, {7}, Scoring(0), "one")})[0];
  EXPECT_EQ(first.usage.session_length, 1);
  Result next = RunAll(*s, {Submit(*s, {9, 11}, Scoring(0), "one")})[0];
  const std::vector<double> whole = TokenByToken({7, 9, 11});
  ASSERT_EQ(next.prompt_logprobs.size(), 2u);
  EXPECT_NEAR(next.prompt_logprobs[0].logprob, whole[0], 1e-4);
  EXPECT_NEAR(next.prompt_logprobs[1].logprob, whole[1], 1e-4);
}

TEST_F(PromptLogprobsTest, AStalledReaderPausesScoring) {
  auto s = Make(1);
  auto stream = Submit(*s, Prompt(600, 8), Scoring(0), "", /*capacity=*/2);
  for (int i = 0; i < 20; ++i) s->StepForTest();
  Result r;
  Drain(*stream, r);
  EXPECT_FALSE(r.final);
  EXPECT_EQ(r.events, 2);  // paused on the full stream
  Result rest = RunAll(*s, {stream})[0];
  ASSERT_TRUE(rest.final);
  EXPECT_EQ(r.prompt_logprobs.size() + rest.prompt_logprobs.size(), 599u);  // nothing lost
}

}  // namespace
}  // namespace mambaserve
