// Property tests on random Unicode text: encode/decode is lossless (after NFC for GPT-NeoX) and
// streaming detokenization agrees with Decode, chunk by chunk valid UTF-8.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "tests/engine/tokenizer/random_text.h"
#include "tests/engine/tokenizer/test_data.h"

namespace mambaserve {
namespace {

constexpr int kStringsPerTokenizer = 3000;

void CheckStreaming(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                    const std::string& expected) {
  IncrementalDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (const int32_t id : ids) {
    auto chunk = detokenizer.Push(id);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    ASSERT_TRUE(testing::IsValidUtf8(*chunk));
    streamed += *chunk;
  }
  const std::string tail = detokenizer.Flush();
  ASSERT_TRUE(testing::IsValidUtf8(tail));
  streamed += tail;
  EXPECT_EQ(streamed, expected);
}

TEST(TokenizerRoundTripTest, NeoxDecodeOfEncodeIsNfc) {
  const Tokenizer& tokenizer = testing::SharedTokenizer("gpt-neox-20b");
  testing::RandomTextGenerator generator(/*seed=*/1234);
  for (int i = 0; i < kStringsPerTokenizer; ++i) {
    const std::string text = generator.Next();
    auto ids = tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto decoded = tokenizer.Decode(*ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ASSERT_EQ(*decoded, testing::Nfc(text)) << "string #" << i;
    CheckStreaming(tokenizer, *ids, *decoded);
  }
}

// Falcon's vocabulary lacks a few control bytes (e.g. \v); like the reference, BPE drops
// characters it has no token for, so those bytes are not expected back.
std::string WithoutUnencodableAsciiBytes(const Tokenizer& tokenizer, const std::string& text) {
  bool missing[128] = {};
  for (int b = 0; b < 128; ++b) missing[b] = tokenizer.Encode(std::string(1, char(b)))->empty();
  std::string result;
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 128 || !missing[static_cast<unsigned char>(c)]) {
      result += c;
    }
  }
  return result;
}

TEST(TokenizerRoundTripTest, FalconDecodeOfEncodeIsIdentity) {
  const Tokenizer& tokenizer = testing::SharedTokenizer("falcon");
  testing::RandomTextGenerator generator(/*seed=*/5678);
  generator.set_include_special_tokens(true);
  for (int i = 0; i < kStringsPerTokenizer; ++i) {
    const std::string text = generator.Next();
    auto ids = tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto decoded = tokenizer.Decode(*ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ASSERT_EQ(*decoded, WithoutUnencodableAsciiBytes(tokenizer, text)) << "string #" << i;
    CheckStreaming(tokenizer, *ids, *decoded);
  }
}

TEST(TokenizerRoundTripTest, StreamingMatchesDecodeForArbitraryIdSequences) {
  // Random ids split characters anywhere and produce invalid byte sequences; the streamed text
  // must still equal Decode, with every chunk valid UTF-8.
  for (const char* name : {"gpt-neox-20b", "falcon"}) {
    const Tokenizer& tokenizer = testing::SharedTokenizer(name);
    std::mt19937 rng(99);
    std::uniform_int_distribution<int32_t> any_id(0, tokenizer.vocab_size() - 1);
    std::uniform_int_distribution<int32_t> byte_id(0, 400);  // mostly single-byte tokens
    for (int i = 0; i < 500; ++i) {
      std::vector<int32_t> ids(rng() % 20);
      for (int32_t& id : ids) id = (rng() % 2) ? any_id(rng) : byte_id(rng);
      auto decoded = tokenizer.Decode(ids);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      ASSERT_TRUE(testing::IsValidUtf8(*decoded));
      CheckStreaming(tokenizer, ids, *decoded);
    }
  }
}

TEST(TokenizerRoundTripTest, ConcurrentEncodeIsConsistent) {
  const Tokenizer& tokenizer = testing::SharedTokenizer("falcon");
  testing::RandomTextGenerator generator(/*seed=*/42);
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(generator.Next());
    expected.push_back(*tokenizer.Encode(texts.back()));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = t; i < texts.size(); i += 1 + t) {
          if (*tokenizer.Encode(texts[i]) != expected[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace mambaserve
