// The `mambaserve tokenize` subcommand, driven through RunTokenizeCommand with temp files.
#include "server/cli/tokenize_command.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/engine/tokenizer/test_data.h"

namespace mambaserve {
namespace {

class TokenizeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / "tokenize_command_test";
    std::filesystem::create_directories(dir_);
  }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "tokenize");
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    return RunTokenizeCommand(static_cast<int>(argv.size()), argv.data());
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  void Write(const std::string& name, const std::string& contents) const {
    std::ofstream(Path(name), std::ios::binary) << contents;
  }

  std::filesystem::path dir_;
  const std::string tokenizer_ = testing::DataDir("gpt-neox-20b") + "/tokenizer.json";
};

TEST_F(TokenizeCommandTest, EncodesWholeFile) {
  Write("in.txt", "Hello world\n<|endoftext|>");
  ASSERT_EQ(
      Run({"--tokenizer", tokenizer_, "--text-file", Path("in.txt"), "--json", Path("out.json")}),
      0);
  const auto result = nlohmann::json::parse(testing::ReadFileOrDie(Path("out.json")));
  const auto expected =
      testing::SharedTokenizer("gpt-neox-20b").Encode("Hello world\n<|endoftext|>");
  EXPECT_EQ(result["ids"].get<std::vector<int32_t>>(), *expected);
  EXPECT_EQ(result["ids"].back(), 0);
}

TEST_F(TokenizeCommandTest, Decodes) {
  ASSERT_EQ(Run({"--tokenizer", tokenizer_, "--decode", "--ids", "12092,1533,0", "--json",
                 Path("text.json")}),
            0);
  const auto result = nlohmann::json::parse(testing::ReadFileOrDie(Path("text.json")));
  EXPECT_EQ(result["text"], "Hello world<|endoftext|>");
}

TEST_F(TokenizeCommandTest, ErrorsReturnNonZero) {
  Write("bad.txt", "abc\xff");
  EXPECT_NE(
      Run({"--tokenizer", tokenizer_, "--text-file", Path("bad.txt"), "--json", Path("o.json")}),
      0);
  EXPECT_NE(Run({"--tokenizer", tokenizer_, "--decode", "--ids", "1,x", "--json", Path("o.json")}),
            0);
  EXPECT_NE(
      Run({"--tokenizer", tokenizer_, "--decode", "--ids", "99999999", "--json", Path("o.json")}),
      0);
  EXPECT_NE(Run({"--tokenizer", "/nonexistent.json", "--text-file", Path("bad.txt"), "--json",
                 Path("o.json")}),
            0);
  EXPECT_NE(Run({"--tokenizer", tokenizer_, "--bogus"}), 0);
  EXPECT_NE(Run({"--tokenizer", tokenizer_, "--text-file"}), 0);
  EXPECT_NE(Run({}), 0);
}

}  // namespace
}  // namespace mambaserve
