// Engines sharing one real Redis behave as replicas of one deployment: a conversation moves
// between them turn by turn and gives exactly the tokens of one request over its whole history;
// one turn at a time runs per session; store failures are reported with their codes while the
// sessions a replica holds keep working.
#include "engine/session_store/stored_sessions.h"

#include <fstream>
#include <future>

#include "engine/engine.h"
#include "engine/testing/random_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/engine_calls.h"
#include "tests/testing/redis_process.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

constexpr int kTurnTokens = 4;

class StoredSessionsTest : public ::testing::TestWithParam<bool> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ModelConfig config = *PresetConfig("tiny", ModelType::kMamba);
    config.eos_token_id = -1;
    ASSERT_TRUE(WriteRandomModel(config, DType::kF32, 5, dir_->path()).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override { ASSERT_TRUE(redis_.ready()) << "redis-server did not start"; }

  // A replica: its own engine and state slots, the shared store. `sync`: the test's parameter.
  std::unique_ptr<Engine> Replica(int slots = 4, int64_t host_budget = int64_t{1} << 30,
                                  milliseconds lease_wait = milliseconds(2000)) {
    EngineOptions options;
    options.model_dir = dir_->path();
    options.backend.kind = BackendKind::kCpu;
    options.backend.num_slots = slots;
    options.backend.num_threads = 1;
    options.scheduler.max_batch = slots;
    options.scheduler.sessions.host_budget_bytes = host_budget;
    options.max_prompt_tokens = 256;
    StoredSessionsOptions store;
    store.store.endpoint = redis_.endpoint();
    store.store.timeout = milliseconds(500);
    store.sync = GetParam();
    store.lease_wait = lease_wait;
    options.session_store = store;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(std::move(options));
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }
  // The same model without a store or a session: the reference for a whole conversation.
  std::unique_ptr<Engine> Reference() {
    EngineOptions options;
    options.model_dir = dir_->path();
    options.backend.kind = BackendKind::kCpu;
    options.backend.num_slots = 1;
    options.backend.num_threads = 1;
    options.max_prompt_tokens = 256;
    return *Engine::Create(std::move(options));
  }

  static absl::Status Create(Engine& engine, const std::string& id) {
    Await<SessionInfo> created;
    engine.CreateSession(id, created.callback());
    return created.get().status();
  }
  static absl::StatusOr<SessionInfo> Get(Engine& engine, const std::string& id) {
    Await<SessionInfo> got;
    engine.GetSession(id, got.callback());
    return got.get();
  }

  // Runs `turn` on `engine` and checks its tokens against one request over the whole history.
  void TurnMatchesWholeHistory(Engine& engine, Engine& reference, const std::string& id,
                               std::vector<int32_t> turn, std::vector<int32_t>* history) {
    absl::StatusOr<std::vector<int32_t>> got = GenerateGreedy(engine, turn, kTurnTokens, id);
    ASSERT_TRUE(got.ok()) << got.status();
    history->insert(history->end(), turn.begin(), turn.end());
    absl::StatusOr<std::vector<int32_t>> expected =
        GenerateGreedy(reference, *history, kTurnTokens);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_EQ(*got, *expected) << "turn of " << history->size() << " tokens of history";
    history->insert(history->end(), got->begin(), got->end());
  }

  static testing::TempDir* dir_;
  testing::RedisProcess redis_;
};
testing::TempDir* StoredSessionsTest::dir_;

TEST_P(StoredSessionsTest, AConversationMovingBetweenReplicasGivesTheTokensOfOneRequest) {
  std::unique_ptr<Engine> a = Replica(), b = Replica(), reference = Reference();
  ASSERT_TRUE(Create(*a, "chat").ok());
  std::vector<int32_t> history;
  Engine* replicas[] = {a.get(), b.get(), b.get(), a.get(), b.get()};
  int32_t next = 10;
  for (Engine* replica : replicas) {
    TurnMatchesWholeHistory(*replica, *reference, "chat", {next, next + 1, next + 2}, &history);
    next += 3;
  }
  // b loaded it at its first turn, a reloaded the newer version at its second; b's second turn
  // used what it held.
  EXPECT_EQ(b->session_store_stats()->loads + a->session_store_stats()->loads, 3);
  EXPECT_EQ(a->session_store_stats()->writes + b->session_store_stats()->writes, 5);
  ASSERT_TRUE(
      a->FlushSessionStore(std::chrono::steady_clock::now() + std::chrono::seconds(5)).ok());
  EXPECT_EQ(Get(*a, "chat")->length, static_cast<int64_t>(history.size()));
  EXPECT_EQ(a->session_store_stats()->unstored_sessions, 0);
  EXPECT_EQ(b->session_store_stats()->unstored_sessions, 0);
}

TEST_P(StoredSessionsTest, ATurnWhileAnotherReplicaHoldsTheSessionIsAborted) {
  std::unique_ptr<Engine> a = Replica(4, int64_t{1} << 30, milliseconds(100));
  ASSERT_TRUE(Create(*a, "busy").ok());
  RedisSessionStore elsewhere(redis_.store_options());
  ASSERT_TRUE(elsewhere.AcquireLease("busy", "another-replica", milliseconds(10000)).ok());
  absl::StatusOr<std::vector<int32_t>> refused = GenerateGreedy(*a, {1, 2}, 2, "busy");
  EXPECT_TRUE(absl::IsAborted(refused.status())) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("another replica"));
  EXPECT_EQ(a->session_store_stats()->lease_conflicts, 1);
  EXPECT_EQ(Get(*a, "busy")->length, 0) << "the refused turn changed nothing";
  ASSERT_TRUE(elsewhere.ReleaseLease("busy", "another-replica").ok());
  EXPECT_TRUE(GenerateGreedy(*a, {1, 2}, 2, "busy").ok());
}

TEST_P(StoredSessionsTest, ATurnWaitsForAnotherReplicaStoringTheSessionsPreviousTurn) {
  std::unique_ptr<Engine> a = Replica(4, int64_t{1} << 30, milliseconds(3000));
  ASSERT_TRUE(Create(*a, "next").ok());
  RedisSessionStore elsewhere(redis_.store_options());
  ASSERT_TRUE(elsewhere.AcquireLease("next", "another-replica", milliseconds(300)).ok());
  ASSERT_TRUE(elsewhere.MarkStoring("next", "another-replica").ok());
  EXPECT_EQ(*elsewhere.GetLeaseState("next"), RedisSessionStore::LeaseState::kStoring);
  // Its write does not finish here; the lease expires after 300 ms and the turn runs.
  EXPECT_TRUE(GenerateGreedy(*a, {1, 2}, 2, "next").ok());
  EXPECT_EQ(a->session_store_stats()->lease_conflicts, 0);
}

TEST_P(StoredSessionsTest, SessionsIdsAreUniqueAcrossReplicasAndDeleteReachesEveryOne) {
  std::unique_ptr<Engine> a = Replica(), b = Replica();
  ASSERT_TRUE(Create(*a, "one").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(Create(*b, "one")));
  ASSERT_TRUE(GenerateGreedy(*a, {3, 4}, 2, "one").ok());
  ASSERT_TRUE(GenerateGreedy(*b, {5}, 2, "one").ok());  // b holds it too now
  std::promise<absl::Status> deleted;
  b->DeleteSession("one", [&](absl::Status s) { deleted.set_value(s); });
  ASSERT_TRUE(deleted.get_future().get().ok());
  // a still holds an old copy; the store says the session is gone.
  absl::StatusOr<std::vector<int32_t>> gone = GenerateGreedy(*a, {6}, 2, "one");
  EXPECT_TRUE(absl::IsNotFound(gone.status())) << gone.status();
  EXPECT_TRUE(absl::IsNotFound(GenerateGreedy(*b, {6}, 2, "one").status()));
}

TEST_P(StoredSessionsTest, AForkOnAnotherReplicaStartsFromTheStoredSource) {
  std::unique_ptr<Engine> a = Replica(), b = Replica(), reference = Reference();
  ASSERT_TRUE(Create(*a, "doc").ok());
  std::vector<int32_t> history;
  TurnMatchesWholeHistory(*a, *reference, "doc", {7, 8, 9, 10}, &history);
  Await<SessionInfo> forked;
  b->ForkSession("doc", "copy", forked.callback());
  ASSERT_TRUE(forked.get().ok());
  std::vector<int32_t> fork_history = history;
  TurnMatchesWholeHistory(*a, *reference, "copy", {11}, &fork_history);  // a loads the fork
  TurnMatchesWholeHistory(*b, *reference, "doc", {12}, &history);        // the source goes on
}

TEST_P(StoredSessionsTest, ASessionEvictedFromHostMemoryIsReloadedFromTheStore) {
  // One slot and host memory for one and a half parked states: the third session's turn parks
  // the second, which evicts the first.
  const int64_t state_bytes = PresetConfig("tiny", ModelType::kMamba)->state_bytes();
  std::unique_ptr<Engine> a = Replica(1, state_bytes * 3 / 2), reference = Reference();
  std::vector<int32_t> histories[3];
  for (int i = 0; i < 3; ++i) {
    const std::string id = "s" + std::to_string(i);
    ASSERT_TRUE(Create(*a, id).ok());
    TurnMatchesWholeHistory(*a, *reference, id, {i + 1, i + 2}, &histories[i]);
  }
  EXPECT_EQ(a->stats().Snapshot().sessions_evicted_total, 1);
  TurnMatchesWholeHistory(*a, *reference, "s0", {6}, &histories[0]);
  EXPECT_GE(a->session_store_stats()->loads, 1);
}

TEST_P(StoredSessionsTest, WhileRedisIsDownHeldSessionsKeepWorkingAndAreStoredWhenItReturns) {
  std::unique_ptr<Engine> a = Replica(), b = Replica(), reference = Reference();
  ASSERT_TRUE(Create(*a, "kept").ok());
  std::vector<int32_t> history;
  TurnMatchesWholeHistory(*a, *reference, "kept", {1, 2}, &history);
  redis_.Stop();

  // The turn runs on a's copy. With sync, its completion cannot be acknowledged: UNAVAILABLE,
  // saying so, and the session keeps the turn. Either way its tokens are those of one request.
  absl::StatusOr<std::vector<int32_t>> turn = GenerateGreedy(*a, {3}, kTurnTokens, "kept");
  history.push_back(3);
  absl::StatusOr<std::vector<int32_t>> expected = GenerateGreedy(*reference, history, kTurnTokens);
  ASSERT_TRUE(expected.ok());
  if (GetParam()) {
    EXPECT_TRUE(absl::IsUnavailable(turn.status())) << turn.status();
    EXPECT_THAT(turn.status().message(), HasSubstr("did not acknowledge"));
  } else {
    ASSERT_TRUE(turn.ok()) << turn.status();
    EXPECT_EQ(*turn, *expected);
  }
  history.insert(history.end(), expected->begin(), expected->end());
  EXPECT_EQ(Get(*a, "kept")->length, static_cast<int64_t>(history.size()));
  EXPECT_GT(a->session_store_stats()->errors, 0);
  EXPECT_EQ(a->session_store_stats()->unstored_sessions, 1);
  // b does not hold it and cannot load it; a new session cannot be registered.
  absl::StatusOr<std::vector<int32_t>> elsewhere = GenerateGreedy(*b, {4}, 2, "kept");
  EXPECT_TRUE(absl::IsUnavailable(elsewhere.status())) << elsewhere.status();
  EXPECT_THAT(elsewhere.status().message(), HasSubstr("cannot be reached"));
  EXPECT_TRUE(absl::IsUnavailable(Create(*a, "new")));
  // Sessions without a store keep working on both.
  EXPECT_TRUE(GenerateGreedy(*b, {4}, 2).ok());

  ASSERT_TRUE(redis_.Start());  // an empty Redis: a's flush puts the session back
  ASSERT_TRUE(
      a->FlushSessionStore(std::chrono::steady_clock::now() + std::chrono::seconds(5)).ok());
  EXPECT_EQ(a->session_store_stats()->unstored_sessions, 0);
  TurnMatchesWholeHistory(*b, *reference, "kept", {5, 6}, &history);
}

TEST_P(StoredSessionsTest, ARedisThatStopsAnsweringStallsNoOtherStream) {
  std::unique_ptr<Engine> a = Replica();
  ASSERT_TRUE(Create(*a, "waiting").ok());
  redis_.Pause();  // accepts connections, answers nothing: each call waits out the 500 ms timeout
  auto turn = std::async(std::launch::async, [&] { return GenerateGreedy(*a, {1}, 2, "waiting"); });
  // A stream without a session runs to its end while the session's turn waits on the store.
  EXPECT_TRUE(GenerateGreedy(*a, {5, 6, 7}, 4).ok());
  EXPECT_EQ(turn.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  absl::StatusOr<std::vector<int32_t>> waited = turn.get();
  redis_.Resume();
  // The session is held here: its turn ran from memory; with sync, it could not be acknowledged.
  if (GetParam()) {
    EXPECT_TRUE(absl::IsUnavailable(waited.status())) << waited.status();
  } else {
    EXPECT_TRUE(waited.ok()) << waited.status();
  }
  EXPECT_GT(a->session_store_stats()->errors, 0);
}

TEST_P(StoredSessionsTest, AForeignOrCorruptStoredSessionIsDataLossAndHarmsNoOther) {
  std::unique_ptr<Engine> a = Replica(), reference = Reference();
  ASSERT_TRUE(Create(*a, "fine").ok());
  RedisSessionStore raw(redis_.store_options());
  ASSERT_TRUE(
      raw.Create("foreign", testing::Stored(3, "another-model", "whatever"), milliseconds(0)).ok());
  absl::StatusOr<std::vector<int32_t>> foreign = GenerateGreedy(*a, {1}, 2, "foreign");
  EXPECT_TRUE(absl::IsDataLoss(foreign.status())) << foreign.status();
  EXPECT_THAT(foreign.status().message(), HasSubstr("another model"));

  const std::string fingerprint = a->info().fingerprint;
  ASSERT_TRUE(
      raw.Create("garbled", testing::Stored(1, fingerprint, "not a session blob"), milliseconds(0))
          .ok());
  absl::StatusOr<std::vector<int32_t>> garbled = GenerateGreedy(*a, {1}, 2, "garbled");
  EXPECT_TRUE(absl::IsDataLoss(garbled.status())) << garbled.status();

  ASSERT_TRUE(raw.Create("flipped", testing::Stored(1, fingerprint, "x"), milliseconds(0)).ok());
  RedisConnection connection(redis_.endpoint(), milliseconds(1000));
  ASSERT_TRUE(connection.Command({"HSET", raw.SessionKey("flipped"), "blob", "y"}).ok());
  EXPECT_TRUE(absl::IsDataLoss(GenerateGreedy(*a, {1}, 2, "flipped").status()));
  EXPECT_GE(a->session_store_stats()->errors, 3);

  std::vector<int32_t> history;
  TurnMatchesWholeHistory(*a, *reference, "fine", {1, 2}, &history);
}

INSTANTIATE_TEST_SUITE_P(WriteModes, StoredSessionsTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Sync") : std::string("WriteBehind");
                         });

}  // namespace
}  // namespace mambaserve
