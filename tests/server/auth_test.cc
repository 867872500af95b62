// Bearer-token authentication: the token file's format and checks, lookups, and reloading.
#include "server/auth.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

class TokenAuthenticatorTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::ofstream(dir_.file("tokens")) << text;
    return dir_.file("tokens");
  }
  testing::TempDir dir_;
};

TEST_F(TokenAuthenticatorTest, KnownTokensNameTheirPrincipal) {
  auto auth = TokenAuthenticator::FromFile(Write(
      "# team tokens\n\n  alice-token-0123456789 alice\nbob-token-0123456789\tbob@example.org\n"));
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(*(*auth)->Authenticate("Bearer alice-token-0123456789"), "alice");
  EXPECT_EQ(*(*auth)->Authenticate("Bearer bob-token-0123456789"), "bob@example.org");
  for (const char* bad : {"", "Bearer ", "Bearer alice-token-012345678", "alice-token-0123456789",
                          "Basic alice-token-0123456789", "Bearer alice-token-0123456789 "}) {
    absl::StatusOr<std::string> refused = (*auth)->Authenticate(bad);
    EXPECT_TRUE(absl::IsUnauthenticated(refused.status())) << "\"" << bad << "\"";
  }
}

TEST_F(TokenAuthenticatorTest, MalformedFilesAreRefusedNamingTheLine) {
  struct Case {
    std::string text, says;
  };
  for (const Case& c : std::vector<Case>{
           {"only-one-field-0123456789\n", "line 1: expected \"TOKEN PRINCIPAL\""},
           {"# ok\nshort alice\n", "line 2: a token needs at least 16 characters"},
           {"token-0123456789abcdef al/ice\n", "line 1: principal \"al/ice\" has a character"},
           {"# nothing but comments\n", "holds no token"}}) {
    auto auth = TokenAuthenticator::FromFile(Write(c.text));
    ASSERT_FALSE(auth.ok()) << c.text;
    EXPECT_THAT(std::string(auth.status().message()), HasSubstr(c.says));
  }
  EXPECT_FALSE(TokenAuthenticator::FromFile(dir_.file("missing")).ok());
}

TEST_F(TokenAuthenticatorTest, AChangedFileIsReadAgainAndABrokenOneKeepsTheOldTokens) {
  const std::string path = Write("first-token-0123456789 alice\n");
  auto auth = std::move(*TokenAuthenticator::FromFile(path));
  ASSERT_TRUE(auth->Authenticate("Bearer first-token-0123456789").ok());
  auto touch_later = [&](const std::string& text) {
    Write(text);
    std::filesystem::last_write_time(
        path, std::filesystem::last_write_time(path) + std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the once-a-second check
  };
  touch_later("second-token-0123456789 alice\n");
  EXPECT_TRUE(
      absl::IsUnauthenticated(auth->Authenticate("Bearer first-token-0123456789").status()));
  EXPECT_EQ(*auth->Authenticate("Bearer second-token-0123456789"), "alice");
  touch_later("not a valid line at all\n");
  EXPECT_EQ(*auth->Authenticate("Bearer second-token-0123456789"), "alice");
}

}  // namespace
}  // namespace mambaserve
