// The generated tokenizer.json is a real byte-level BPE tokenizer: it loads, round-trips any text,
// compresses English, and the same size always gives the same bytes.
#include "engine/testing/bpe_tokenizer_writer.h"

#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace mambaserve {
namespace {

TEST(BpeTokenizerWriterTest, LoadsAndRoundTripsText) {
  auto json = TrainByteLevelBpeJson(512);
  ASSERT_TRUE(json.ok()) << json.status();
  auto tokenizer = Tokenizer::FromJson(*json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 512);
  EXPECT_EQ((*tokenizer)->TokenId("<|endoftext|>"), 0);
  EXPECT_EQ((*tokenizer)->TokenString(1 + '!'), "!");         // byte b is id 1 + b
  EXPECT_EQ((*tokenizer)->TokenString(1 + ' '), "\xC4\xA0");  // ByteLevel's "Ġ"
  for (const std::string& text : std::vector<std::string>{
           "Alice was beginning to get very tired of sitting by her sister.",
           "  two  spaces\n\nnew lines\ttabs", "naïve café — 日本語 🙂",
           "1865: 7 shillings", "don't they'll we've", std::string("\x01\x02 control", 10)}) {
    auto ids = (*tokenizer)->Encode(text);
    ASSERT_TRUE(ids.ok()) << text;
    for (int32_t id : *ids) EXPECT_LT(id, 512);
    EXPECT_EQ(*(*tokenizer)->Decode(*ids), text);
  }
  // Merges learned from English: common words become few tokens.
  const auto english = *(*tokenizer)->Encode(BpeTrainingText());
  EXPECT_LT(english.size(), BpeTrainingText().size() / 2);
  EXPECT_EQ((*tokenizer)->Encode(" the")->size(), 1u);
  EXPECT_TRUE(absl::IsInvalidArgument((*tokenizer)->Encode("bad \xff").status()));
}

TEST(BpeTokenizerWriterTest, DeterministicAndSizeChecked) {
  EXPECT_EQ(*TrainByteLevelBpeJson(300), *TrainByteLevelBpeJson(300));
  EXPECT_NE(*TrainByteLevelBpeJson(300), *TrainByteLevelBpeJson(301));
  EXPECT_FALSE(TrainByteLevelBpeJson(100).ok());
  EXPECT_FALSE(TrainByteLevelBpeJson(50280).ok());
  auto small = Tokenizer::FromJson(*TrainByteLevelBpeJson(258));
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(*(*small)->Decode(*(*small)->Encode("bytes only")), "bytes only");
}

}  // namespace
}  // namespace mambaserve
