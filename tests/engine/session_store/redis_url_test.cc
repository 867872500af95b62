#include "engine/session_store/redis_url.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RedisUrlTest, ParsesHostPortDatabaseAndCredentials) {
  absl::StatusOr<RedisEndpoint> e = ParseRedisUrl("redis://redis.default.svc:6380/2");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->host, "redis.default.svc");
  EXPECT_EQ(e->port, 6380);
  EXPECT_EQ(e->db, 2);
  EXPECT_EQ(e->password, "");

  e = ParseRedisUrl("redis://10.0.0.7");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->host, "10.0.0.7");
  EXPECT_EQ(e->port, 6379);
  EXPECT_EQ(e->db, 0);

  e = ParseRedisUrl("redis://:s%40cr%3At@cache:7000");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->username, "");
  EXPECT_EQ(e->password, "s@cr:t");
  EXPECT_EQ(e->host, "cache");
  EXPECT_EQ(e->port, 7000);

  e = ParseRedisUrl("redis://app:pw@[::1]:6390/1");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->username, "app");
  EXPECT_EQ(e->password, "pw");
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 6390);
  EXPECT_EQ(e->db, 1);
}

TEST(RedisUrlTest, RefusesWhatIsNotAUsableUrlWithTheReason) {
  EXPECT_THAT(ParseRedisUrl("http://cache:6379").status().message(), HasSubstr("not a redis://"));
  EXPECT_THAT(ParseRedisUrl("redis://cache:0").status().message(), HasSubstr("port"));
  EXPECT_THAT(ParseRedisUrl("redis://cache:65536").status().message(), HasSubstr("port"));
  EXPECT_THAT(ParseRedisUrl("redis://cache:").status().message(), HasSubstr("port"));
  EXPECT_THAT(ParseRedisUrl("redis://cache/x").status().message(), HasSubstr("database"));
  EXPECT_THAT(ParseRedisUrl("redis://:6379").status().message(), HasSubstr("no host"));
  EXPECT_THAT(ParseRedisUrl("redis://:%zz@cache").status().message(), HasSubstr("escape"));
  EXPECT_THAT(ParseRedisUrl("rediss://cache:6379").status().message(), HasSubstr("TLS"));
}

TEST(RedisUrlTest, RedactsThePasswordForLogs) {
  EXPECT_EQ(RedactedRedisUrl("redis://app:hunter2@cache:6379/1"), "redis://app:***@cache:6379/1");
  EXPECT_EQ(RedactedRedisUrl("redis://:hunter2@cache"), "redis://:***@cache");
  EXPECT_EQ(RedactedRedisUrl("redis://cache:6379"), "redis://cache:6379");
  // A refusal never echoes the password either.
  EXPECT_THAT(ParseRedisUrl("redis://:hunter2@cache:x").status().message(),
              Not(HasSubstr("hunter2")));
}

}  // namespace
}  // namespace mambaserve
