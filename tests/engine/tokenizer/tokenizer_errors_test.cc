// Bad input never crashes: invalid UTF-8, unknown ids and malformed tokenizer.json files all
// come back as clear errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "nlohmann/json.hpp"
#include "tests/engine/tokenizer/test_data.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

TEST(TokenizerErrorsTest, InvalidUtf8NamesTheByteOffset) {
  const Tokenizer& tokenizer = testing::SharedTokenizer("gpt-neox-20b");
  const std::pair<std::string, size_t> cases[] = {{"abc\xff", 3},
                                                  {"\x80", 0},
                                                  {"ok \xc3", 3},
                                                  {"\xc0\xaf", 0},
                                                  {"a\xe0\x80\x80", 1},
                                                  {"\xed\xa0\x80", 0},
                                                  {"ab\xf4\x90\x80\x80", 2},
                                                  {"\xe2\x82 x", 0},
                                                  {std::string("x\0\xfe", 3), 2}};
  for (const auto& [text, offset] : cases) {
    auto ids = tokenizer.Encode(text);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("byte offset " + std::to_string(offset)));
  }
  // NUL is valid UTF-8.
  EXPECT_TRUE(tokenizer.Encode(std::string("a\0b", 3)).ok());
}

TEST(TokenizerErrorsTest, UnknownIds) {
  const Tokenizer& tokenizer = testing::SharedTokenizer("falcon");
  const std::vector<int32_t> ids = {1, 65024};
  auto text = tokenizer.Decode(ids);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("65024"));
  IncrementalDetokenizer detokenizer(tokenizer);
  EXPECT_FALSE(detokenizer.Push(-5).ok());
  EXPECT_TRUE(detokenizer.Push(1).ok());
}

TEST(TokenizerErrorsTest, DecodeReplacesInvalidBytes) {
  const Tokenizer& tokenizer = testing::SharedTokenizer("gpt-neox-20b");
  // Byte tokens: "Ã" is 0xC3, "ł" is 0xFF, "¨" is 0xA8 in the byte-level alphabet.
  const std::vector<int32_t> ids = {*tokenizer.TokenId("Ã"), *tokenizer.TokenId("a"),
                                    *tokenizer.TokenId("Ã"), *tokenizer.TokenId("¨"),
                                    *tokenizer.TokenId("ł")};
  EXPECT_EQ(*tokenizer.Decode(ids), "\uFFFDa\u00e8\uFFFD");
  IncrementalDetokenizer detokenizer(tokenizer);
  EXPECT_EQ(*detokenizer.Push(ids[0]), "");  // 0xC3 could still start "è"
  EXPECT_EQ(*detokenizer.Push(ids[1]), "\uFFFDa");
  EXPECT_EQ(*detokenizer.Push(ids[2]), "");
  EXPECT_EQ(*detokenizer.Push(ids[3]), "\u00e8");
  EXPECT_EQ(*detokenizer.Push(ids[4]), "\uFFFD");
  EXPECT_EQ(*detokenizer.Push(ids[0]), "");
  EXPECT_EQ(detokenizer.Flush(), "\uFFFD");  // a truncated character at the end of the stream
  EXPECT_EQ(detokenizer.Flush(), "");
}

void ExpectLoadError(const std::string& json, const std::string& message_part) {
  auto tokenizer = Tokenizer::FromJson(json);
  ASSERT_FALSE(tokenizer.ok()) << "accepted: " << json.substr(0, 200);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr(message_part));
}

nlohmann::json NeoxConfig() {
  return nlohmann::json::parse(
      testing::ReadFileOrDie(testing::DataDir("gpt-neox-20b") + "/tokenizer.json"));
}

TEST(TokenizerErrorsTest, MalformedJson) {
  ExpectLoadError("", "not valid JSON");
  ExpectLoadError("{\"model\": ", "not valid JSON");
  ExpectLoadError("[1, 2]", "top level must be an object");
  ExpectLoadError("{\"decoder\": {\"type\": \"ByteLevel\"}}", "missing field (root).model");
  const std::string text = NeoxConfig().dump();
  ExpectLoadError(text.substr(0, text.size() / 2), "not valid JSON");
}

TEST(TokenizerErrorsTest, WrongTypesAndUnsupportedComponents) {
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const Case cases[] = {
      {[](auto& j) { j.erase("model"); }, "missing field (root).model"},
      {[](auto& j) { j["model"] = 3; }, "model must be an object"},
      {[](auto& j) { j["model"]["type"] = "WordPiece"; }, "unsupported model type \"WordPiece\""},
      {[](auto& j) { j["model"]["vocab"] = nlohmann::json::array(); },
       "model.vocab must be an object"},
      {[](auto& j) { j["model"]["vocab"]["Ġthe"] = "x"; }, "model.vocab[\"Ġthe\"]"},
      {[](auto& j) { j["model"]["merges"][3] = 7; }, "model.merges[3]"},
      {[](auto& j) { j["model"]["merges"][4] = "nospace"; }, "model.merges[4]"},
      {[](auto& j) { j["model"]["merges"][5] = "Ġ zzzzqq"; }, "missing from the vocabulary"},
      {[](auto& j) { j["model"]["byte_fallback"] = true; }, "byte_fallback"},
      {[](auto& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       "continuing_subword_prefix"},
      {[](auto& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "unsupported pre-tokenizer type \"Whitespace\""},
      {[](auto& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", 1}};
       },
       "pretokenizers must be an array"},
      {[](auto& j) {
         j["pre_tokenizer"] = {{"type", "Split"},
                               {"pattern", {{"Regex", "a(?=b)"}}},
                               {"behavior", "Isolated"},
                               {"invert", false}};
       },
       "lookahead is not supported"},
      {[](auto& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Sideways"}};
       },
       "unknown split behavior \"Sideways\""},
      {[](auto& j) {
         j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", "yes"}};
       },
       "use_regex must be a boolean"},
      {[](auto& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       "unsupported normalizer type \"Lowercase\""},
      {[](auto& j) {
         j["normalizer"] = {{"kind", "NFC"}};
       },
       "missing field normalizer.type"},
      {[](auto& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "unsupported decoder type"},
      {[](auto& j) { j["added_tokens"] = "none"; }, "added_tokens must be an array"},
      {[](auto& j) { j["added_tokens"][0].erase("content"); }, "added_tokens[0].content"},
      {[](auto& j) { j["added_tokens"][1]["lstrip"] = 1; }, "added_tokens[1].lstrip"},
      {[](auto& j) {
         j["truncation"] = {{"max_length", 8}};
       },
       "truncation"},
  };
  for (const Case& c : cases) {
    nlohmann::json config = NeoxConfig();
    c.edit(config);
    ExpectLoadError(config.dump(), c.message);
  }
}

TEST(TokenizerErrorsTest, MissingFile) {
  auto tokenizer = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mambaserve
