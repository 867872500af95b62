// Added tokens: special tokens inside text and the lstrip/rstrip/single_word/normalized options.
// Expected ids come from Hugging Face `tokenizers` on the same configurations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/engine/tokenizer/test_data.h"

namespace mambaserve {
namespace {

using ::testing::ElementsAre;

std::vector<int32_t> EncodeOrDie(const Tokenizer& tokenizer, const std::string& text) {
  auto ids = tokenizer.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(TokenizerAddedTokensTest, EndOfTextIds) {
  const Tokenizer& neox = testing::SharedTokenizer("gpt-neox-20b");
  const Tokenizer& falcon = testing::SharedTokenizer("falcon");
  EXPECT_EQ(neox.TokenId("<|endoftext|>"), 0);
  EXPECT_EQ(falcon.TokenId("<|endoftext|>"), 11);
  EXPECT_EQ(neox.TokenString(0), "<|endoftext|>");
  EXPECT_EQ(falcon.TokenString(11), "<|endoftext|>");
  EXPECT_EQ(neox.TokenId("Ġthe"), 253);
  EXPECT_EQ(neox.TokenId("no such token"), std::nullopt);
  EXPECT_EQ(neox.TokenString(-1), std::nullopt);
  EXPECT_EQ(neox.vocab_size(), 50281);
  EXPECT_EQ(falcon.vocab_size(), 65024);
}

TEST(TokenizerAddedTokensTest, SpecialTokensInsideText) {
  const Tokenizer& neox = testing::SharedTokenizer("gpt-neox-20b");
  const Tokenizer& falcon = testing::SharedTokenizer("falcon");
  EXPECT_THAT(EncodeOrDie(neox, "Hello<|endoftext|>world"), ElementsAre(12092, 0, 10186));
  EXPECT_THAT(EncodeOrDie(falcon, "Hello<|endoftext|>world"), ElementsAre(9856, 11, 9091));
  EXPECT_THAT(EncodeOrDie(neox, "a <|endoftext|> b"), ElementsAre(66, 209, 0, 270));
  EXPECT_THAT(EncodeOrDie(falcon, "a <|endoftext|> b"), ElementsAre(76, 204, 11, 262));
  EXPECT_THAT(EncodeOrDie(neox, "<|endoftext|><|endoftext|>"), ElementsAre(0, 0));
  EXPECT_THAT(EncodeOrDie(falcon, "<|endoftext|><|endoftext|>"), ElementsAre(11, 11));
  EXPECT_THAT(EncodeOrDie(neox, "assistant: hi RWKV"), ElementsAre(50279, 27, 14260, 209, 50280));
  EXPECT_THAT(EncodeOrDie(falcon, "12345678 >>TITLE<<"), ElementsAre(10963, 27681, 5070, 204, 0));
  // GPT-NeoX's whitespace-run tokens are normalized added tokens, matched leftmost-longest.
  EXPECT_THAT(EncodeOrDie(neox, "x   y\t\t z"), ElementsAre(89, 50275, 90, 623, 1182));
}

TEST(TokenizerAddedTokensTest, WhitespaceLookaheadOfByteLevelPattern) {
  // `\s+(?!\S)`: a whitespace run before a word leaves its last character to the word.
  const Tokenizer& falcon = testing::SharedTokenizer("falcon");
  EXPECT_THAT(EncodeOrDie(falcon, "x   y\t\t z"), ElementsAre(99, 258, 291, 663, 725));
}

// GPT-NeoX with extra added tokens exercising every matching option.
std::unique_ptr<Tokenizer> NeoxWithOptions() {
  nlohmann::json config = nlohmann::json::parse(
      testing::ReadFileOrDie(testing::DataDir("gpt-neox-20b") + "/tokenizer.json"));
  auto add = [&](int id, const std::string& content, bool single_word, bool lstrip, bool rstrip,
                 bool normalized, bool special) {
    config["added_tokens"].push_back({{"id", id},
                                      {"content", content},
                                      {"single_word", single_word},
                                      {"lstrip", lstrip},
                                      {"rstrip", rstrip},
                                      {"normalized", normalized},
                                      {"special", special}});
  };
  add(50281, "<mask>", false, true, true, false, true);
  add(50282, "ony", true, false, false, false, false);
  add(50283, "Ωmega", false, false, true, true, false);
  add(50284, "e\u0301t\u00e9", true, true, false, true, false);
  add(50285, "<|endoftext|>x", false, false, false, false, true);
  auto tokenizer = Tokenizer::FromJson(config.dump());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

TEST(TokenizerAddedTokensTest, MatchingOptions) {
  const auto tokenizer = NeoxWithOptions();
  ASSERT_NE(tokenizer, nullptr);
  // "ony" is already in the model vocabulary and keeps its id; the others are numbered after.
  EXPECT_EQ(tokenizer->TokenId("ony"), 2421);
  EXPECT_EQ(tokenizer->TokenId("<|endoftext|>x"), 50284);
  // lstrip + rstrip swallow the surrounding spaces; "ony" right after "<mask>" follows a
  // non-word character, so it counts as a single word.
  EXPECT_THAT(EncodeOrDie(*tokenizer, "<mask> My name is Anthony <mask>ony"),
              ElementsAre(50281, 3220, 1416, 310, 16358, 50281, 2421));
  // Stripping covers tabs and U+2000, but never whitespace an earlier match consumed.
  EXPECT_THAT(EncodeOrDie(*tokenizer, "Hi <mask> there\t<mask>\t<mask>\u2000 x"),
              ElementsAre(12764, 50281, 9088, 50281, 50281, 89));
  // single_word: "ony" inside "aony"/"onyx" or after a combining mark is not extracted.
  EXPECT_THAT(
      EncodeOrDie(*tokenizer, "ony, ony- ◌̰ony aony onyx"),
      ElementsAre(2421, 13, 209, 2421, 14, 3384, 234, 223, 136, 110, 2421, 247, 2421, 327, 28264));
  // normalized=true tokens match the NFC text (U+2126 OHM SIGN normalizes to Ω).
  EXPECT_THAT(EncodeOrDie(*tokenizer, "Ωmega   Ω\u2126mega  after"),
              ElementsAre(50282, 50275, 138, 104, 50282, 50276, 6438));
  EXPECT_THAT(EncodeOrDie(*tokenizer, "caf e\u0301t\u00e9 \u00e9t\u00e9 xe\u0301t\u00e9"),
              ElementsAre(68, 2320, 50283, 50283, 1269, 39929));
  // Longest match wins among overlapping spellings.
  EXPECT_THAT(EncodeOrDie(*tokenizer, "<|endoftext|>x<|endoftext|>y"), ElementsAre(50284, 0, 90));
}

}  // namespace
}  // namespace mambaserve
