// RedisSessionStore against a real redis-server: leases, versions fenced by the lease, creation
// without overwriting, corruption and outages reported with their gRPC-style codes.
#include "engine/session_store/redis_session_store.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/redis_process.h"

namespace mambaserve {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

class RedisSessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ready())
        << "redis-server did not start (scripts/install-deps.sh installs it)";
  }
  RedisSessionStore NewStore(milliseconds timeout = milliseconds(1000)) {
    RedisSessionStoreOptions options = redis_.store_options();
    options.timeout = timeout;
    return RedisSessionStore(options);
  }
  static StoredSession Session(int64_t version, std::string blob) {
    return testing::Stored(version, "fp", std::move(blob));
  }

  testing::RedisProcess redis_;
};

TEST_F(RedisSessionStoreTest, OneLeaseHolderAtATime) {
  RedisSessionStore store = NewStore();
  ASSERT_TRUE(store.AcquireLease("s", "A", milliseconds(5000)).ok());
  absl::Status second = store.AcquireLease("s", "B", milliseconds(5000));
  EXPECT_TRUE(absl::IsAborted(second)) << second;
  EXPECT_THAT(second.message(), HasSubstr("another replica"));
  EXPECT_TRUE(absl::IsAborted(store.RenewLease("s", "B", milliseconds(5000))));
  EXPECT_TRUE(store.RenewLease("s", "A", milliseconds(5000)).ok());
  ASSERT_TRUE(store.ReleaseLease("s", "B").ok());  // not B's: a no-op
  EXPECT_TRUE(absl::IsAborted(store.AcquireLease("s", "B", milliseconds(5000))));
  ASSERT_TRUE(store.ReleaseLease("s", "A").ok());
  EXPECT_TRUE(store.AcquireLease("s", "B", milliseconds(5000)).ok());
  EXPECT_EQ(*store.GetLeaseState("s"), RedisSessionStore::LeaseState::kTurnRunning);
  EXPECT_TRUE(absl::IsAborted(store.MarkStoring("s", "A")));
  ASSERT_TRUE(store.MarkStoring("s", "B").ok());
  EXPECT_EQ(*store.GetLeaseState("s"), RedisSessionStore::LeaseState::kStoring);
  // The old token no longer holds it; the storing one does, until released.
  EXPECT_TRUE(absl::IsAborted(store.RenewLease("s", "B", milliseconds(5000))));
  ASSERT_TRUE(store.ReleaseLease("s", RedisSessionStore::StoringToken("B")).ok());
  EXPECT_EQ(*store.GetLeaseState("s"), RedisSessionStore::LeaseState::kFree);
  EXPECT_TRUE(store.AcquireLease("s", "B", milliseconds(5000)).ok());
  // Other sessions' leases are independent.
  EXPECT_TRUE(store.AcquireLease("t", "A", milliseconds(5000)).ok());
}

TEST_F(RedisSessionStoreTest, AnExpiredLeaseCanBeTakenAndItsHolderCanNoLongerWrite) {
  RedisSessionStore store = NewStore();
  ASSERT_TRUE(store.AcquireLease("s", "A", milliseconds(50)).ok());
  std::this_thread::sleep_for(milliseconds(120));
  ASSERT_TRUE(store.AcquireLease("s", "B", milliseconds(5000)).ok());
  absl::Status stale = store.Write("s", "A", Session(1, "a"), milliseconds(0));
  EXPECT_TRUE(absl::IsAborted(stale)) << stale;
  EXPECT_THAT(stale.message(), HasSubstr("lease"));
  ASSERT_TRUE(store.Write("s", "B", Session(1, "b"), milliseconds(0)).ok());
  absl::StatusOr<std::optional<StoredSession>> read = store.Read("s");
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ((*read)->blob, "b");
}

TEST_F(RedisSessionStoreTest, VersionsOnlyMoveForward) {
  RedisSessionStore store = NewStore();
  ASSERT_TRUE(store.AcquireLease("s", "A", milliseconds(5000)).ok());
  ASSERT_TRUE(store.Write("s", "A", Session(2, "two"), milliseconds(0)).ok());
  EXPECT_TRUE(absl::IsAborted(store.Write("s", "A", Session(2, "again"), milliseconds(0))));
  EXPECT_TRUE(absl::IsAborted(store.Write("s", "A", Session(1, "older"), milliseconds(0))));
  ASSERT_TRUE(store.Write("s", "A", Session(3, "three"), milliseconds(0)).ok());
  absl::StatusOr<std::optional<StoredSessionHeader>> header = store.ReadHeader("s");
  ASSERT_TRUE(header.ok() && header->has_value()) << header.status();
  EXPECT_EQ((*header)->version, 3);
  EXPECT_EQ((*header)->length, 30);
  EXPECT_EQ((*header)->fingerprint, "fp");
}

TEST_F(RedisSessionStoreTest, CreateNeverOverwritesAndDeleteNeedsTheLease) {
  RedisSessionStore store = NewStore();
  ASSERT_TRUE(store.Create("s", Session(0, "new"), milliseconds(0)).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(store.Create("s", Session(0, "other"), milliseconds(0))));
  EXPECT_TRUE(absl::IsAborted(store.Delete("s", "nobody", milliseconds(0)).status()));
  ASSERT_TRUE(store.AcquireLease("s", "A", milliseconds(5000)).ok());
  absl::StatusOr<bool> deleted = store.Delete("s", "A", milliseconds(0));
  ASSERT_TRUE(deleted.ok());
  EXPECT_TRUE(*deleted);
  EXPECT_FALSE(*store.Delete("s", "A", milliseconds(0)));
  // Its tombstone says so to a replica still holding a copy, and refuses that copy's write.
  absl::Status read = store.Read("s").status();
  EXPECT_TRUE(absl::IsNotFound(read)) << read;
  EXPECT_THAT(read.message(), HasSubstr("deleted"));
  EXPECT_TRUE(absl::IsNotFound(store.Write("s", "A", Session(5, "late"), milliseconds(0))));
  // The id may be used again.
  ASSERT_TRUE(store.Create("s", Session(0, "again"), milliseconds(0)).ok());
  EXPECT_EQ((*store.Read("s"))->blob, "again");
}

TEST_F(RedisSessionStoreTest, SessionsExpireWithTheirTtl) {
  RedisSessionStore store = NewStore();
  ASSERT_TRUE(store.Create("s", Session(0, "x"), milliseconds(100)).ok());
  EXPECT_TRUE(store.ReadHeader("s")->has_value());
  std::this_thread::sleep_for(milliseconds(250));
  EXPECT_FALSE(store.ReadHeader("s")->has_value());
}

TEST_F(RedisSessionStoreTest, ACorruptBlobIsDataLoss) {
  RedisSessionStore store = NewStore();
  ASSERT_TRUE(store.Create("s", Session(0, "the blob"), milliseconds(0)).ok());
  RedisConnection raw(redis_.endpoint(), milliseconds(1000));
  ASSERT_TRUE(raw.Command({"HSET", store.SessionKey("s"), "blob", "the blub"}).ok());
  absl::Status read = store.Read("s").status();
  EXPECT_TRUE(absl::IsDataLoss(read)) << read;
  EXPECT_THAT(read.message(), HasSubstr("checksum"));
  ASSERT_TRUE(raw.Command({"HSET", store.SessionKey("s"), "v", "seven"}).ok());
  EXPECT_TRUE(absl::IsDataLoss(store.ReadHeader("s").status()));
  ASSERT_TRUE(raw.Command({"HDEL", store.SessionKey("s"), "crc"}).ok());
  EXPECT_TRUE(absl::IsDataLoss(store.Read("s").status()));
}

TEST_F(RedisSessionStoreTest, AnOutageIsUnavailableAndTheStoreReconnectsAfterIt) {
  RedisSessionStore store = NewStore(milliseconds(300));
  ASSERT_TRUE(store.Create("s", Session(0, "x"), milliseconds(0)).ok());
  redis_.Stop();
  absl::Status down = store.ReadHeader("s").status();
  EXPECT_TRUE(absl::IsUnavailable(down)) << down;
  ASSERT_TRUE(redis_.Start());
  EXPECT_TRUE(store.Ping().ok());  // a new connection; the data went with the old process
  EXPECT_FALSE(store.ReadHeader("s")->has_value());
}

TEST_F(RedisSessionStoreTest, ASlowRedisTimesOutInsteadOfHanging) {
  RedisSessionStore store = NewStore(milliseconds(200));
  ASSERT_TRUE(store.Ping().ok());
  redis_.Pause();
  const auto start = std::chrono::steady_clock::now();
  absl::Status slow = store.ReadHeader("s").status();
  const auto waited = std::chrono::steady_clock::now() - start;
  redis_.Resume();
  EXPECT_TRUE(absl::IsUnavailable(slow)) << slow;
  EXPECT_LT(waited, std::chrono::seconds(5));
  EXPECT_TRUE(store.Ping().ok());
}

TEST_F(RedisSessionStoreTest, AFullRedisRefusesWritesAsResourceExhausted) {
  RedisSessionStore store = NewStore();
  RedisConnection raw(redis_.endpoint(), milliseconds(1000));
  ASSERT_TRUE(raw.Command({"CONFIG", "SET", "maxmemory-policy", "noeviction"}).ok());
  ASSERT_TRUE(raw.Command({"CONFIG", "SET", "maxmemory", "1"}).ok());
  absl::Status full = store.Create("s", Session(0, std::string(1 << 20, 'x')), milliseconds(0));
  EXPECT_TRUE(absl::IsResourceExhausted(full)) << full;
  EXPECT_THAT(full.message(), HasSubstr("out of memory"));
}

}  // namespace
}  // namespace mambaserve
