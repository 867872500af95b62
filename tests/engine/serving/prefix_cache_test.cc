// The prefix-state cache: exact lookups of the longest block-aligned prefix, LRU eviction within
// the budget, and through the scheduler, identical tokens with the cache on and off while a
// shared prompt is read once.
#include "engine/serving/prefix_cache.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/serving/scheduler_fixture.h"

namespace mambaserve {
namespace {

std::shared_ptr<const std::vector<uint8_t>> State(uint8_t fill, size_t bytes = 100) {
  return std::make_shared<const std::vector<uint8_t>>(bytes, fill);
}

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (seed * 7919 + i * 31) % 1000;
  return t;
}

TEST(PrefixCacheTest, FindsTheLongestCachedBlockPrefixLeavingOneTokenToRun) {
  PrefixCache cache(1 << 20, 4);
  const std::vector<int32_t> prompt = Tokens(13, 1);
  const std::span<const int32_t> p(prompt);
  EXPECT_EQ(cache.Longest(p).tokens, 0);
  EXPECT_EQ(cache.stats().misses, 1);
  cache.Insert(p.first(4), State(1));
  cache.Insert(p.first(8), State(2));
  cache.Insert(p.first(6), State(3));  // not a whole block: ignored
  EXPECT_EQ(cache.stats().entries, 2);
  PrefixCache::Hit hit = cache.Longest(p);
  EXPECT_EQ(hit.tokens, 8);
  EXPECT_EQ((*hit.state)[0], 2);
  // A prompt of exactly 8 tokens must still run one: it gets the 4-token prefix.
  EXPECT_EQ(cache.Longest(p.first(8)).tokens, 4);
  // A different token inside the prefix: only the prefix before it matches.
  std::vector<int32_t> other = prompt;
  other[5] += 1;
  EXPECT_EQ(cache.Longest(other).tokens, 4);
  EXPECT_TRUE(cache.Contains(p.first(8)));
  EXPECT_FALSE(cache.Contains(std::span<const int32_t>(other).first(8)));
  EXPECT_EQ(cache.stats().hits, 3);
  EXPECT_EQ(cache.stats().saved_tokens, 16);
}

TEST(PrefixCacheTest, EvictsTheLeastRecentlyUsedBeyondTheBudget) {
  // Each entry: 100 state bytes + 4 ids of 4 bytes = 116 bytes; three fit in 350.
  PrefixCache cache(350, 4);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(Tokens(5, 10 + i));
  for (int i = 0; i < 3; ++i)
    cache.Insert(std::span<const int32_t>(prompts[i]).first(4), State(static_cast<uint8_t>(i)));
  EXPECT_EQ(cache.Longest(prompts[0]).tokens, 4);  // 0 is now the most recently used
  cache.Insert(std::span<const int32_t>(prompts[3]).first(4), State(3));
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().entries, 3);
  EXPECT_LE(cache.stats().bytes, 350);
  EXPECT_EQ(cache.Longest(prompts[1]).tokens, 0);  // the least recently used went
  EXPECT_EQ(cache.Longest(prompts[0]).tokens, 4);
  EXPECT_EQ(cache.Longest(prompts[3]).tokens, 4);
  cache.Insert(std::span<const int32_t>(Tokens(5, 99)).first(4), State(9, 1000));  // over budget
  EXPECT_EQ(cache.stats().entries, 3);
  PrefixCache off(0, 4);
  off.Insert(std::span<const int32_t>(prompts[0]).first(4), State(1));
  EXPECT_EQ(off.Longest(prompts[0]).tokens, 0);
  EXPECT_EQ(off.stats().misses, 0);
}

class PrefixCacheSchedulerTest : public SchedulerTest {};

TEST_F(PrefixCacheSchedulerTest, ASharedPromptIsReadOnceAndTokensAreUnchanged) {
  SchedulerOptions with_cache;
  with_cache.prefix_cache_bytes = 64 << 20;
  with_cache.prefix_cache_block_tokens = 64;
  auto cached = Make(4, with_cache);
  auto plain = Make(4);
  const std::vector<int32_t> system = Prompt(300, 1);
  auto request = [&](int user) {
    std::vector<int32_t> p = system;
    const std::vector<int32_t> question = Prompt(5 + user, 20 + user);
    p.insert(p.end(), question.begin(), question.end());
    return p;
  };
  SamplingParams sampled = Greedy(8);
  sampled.temperature = 0.9;
  sampled.seed = 5;
  // The first request fills the cache; the next ones, two at once, start from its 256 tokens.
  std::vector<std::vector<int32_t>> got, want;
  got.push_back(RunAll(*cached, {Submit(*cached, request(0), sampled)})[0].tokens);
  const std::vector<Result> both =
      RunAll(*cached, {Submit(*cached, request(1), sampled), Submit(*cached, request(2), sampled)});
  for (const Result& r : both) got.push_back(r.tokens);
  for (int user = 0; user < 3; ++user)
    want.push_back(RunAll(*plain, {Submit(*plain, request(user), sampled)})[0].tokens);
  EXPECT_EQ(got, want);
  const SchedulerStats stats = cached->stats().Snapshot();
  EXPECT_EQ(stats.prefix_cache_hits, 2);
  EXPECT_EQ(stats.prefix_cache_misses, 1);
  EXPECT_EQ(stats.prefix_cache_saved_tokens, 2 * 256);
  EXPECT_EQ(stats.prefix_cache_entries, 4);  // 64, 128, 192, 256
  EXPECT_GT(stats.prefix_cache_bytes, 4 * (*model_)->config.state_bytes());
  // Sessions and scoring never use it.
  SamplingParams scoring = Greedy(0);
  scoring.prompt_logprobs = 0;
  RunAll(*cached, {Submit(*cached, request(3), scoring)});
  EXPECT_EQ(cached->stats().Snapshot().prefix_cache_hits, 2);
}

}  // namespace
}  // namespace mambaserve
