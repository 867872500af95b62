// Reference vectors: ids produced by Hugging Face `tokenizers` for each text in vectors.inp.
#include <gtest/gtest.h>

#include "tests/engine/tokenizer/test_data.h"

namespace mambaserve {
namespace {

class TokenizerVectorTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerVectorTest, AllVectorsMatch) {
  const std::string dir = testing::DataDir(GetParam());
  const auto texts = testing::SplitVectorTexts(testing::ReadFileOrDie(dir + "/vectors.inp"));
  const auto expected = testing::ParseVectorIds(testing::ReadFileOrDie(dir + "/vectors.out"));
  ASSERT_EQ(texts.size(), expected.size());
  ASSERT_GT(texts.size(), 0u);
  const Tokenizer& tokenizer = testing::SharedTokenizer(GetParam());
  size_t passed = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = tokenizer.Encode(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected[i]) << "text #" << i << ": \"" << texts[i] << "\"";
    if (*ids == expected[i]) ++passed;
    // Byte-level BPE is lossless: decoding gives back the (already NFC) text.
    auto decoded = tokenizer.Decode(*ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, texts[i]);
  }
  std::cout << GetParam() << ": " << passed << "/" << texts.size() << " vectors match\n";
  EXPECT_EQ(passed, texts.size());
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerVectorTest,
                         ::testing::Values("gpt-neox-20b", "falcon"), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace mambaserve
