// Sessions: park/restore (exact state bytes), LRU parking, eviction over the host budget, TTL,
// one request per session, export/import blob corruption and model mismatch.
#include "engine/serving/session_manager.h"

#include <cstring>
#include <limits>
#include <memory>
#include <random>

#include "absl/strings/str_replace.h"
#include "engine/backend/backend.h"
#include "engine/backend_factory.h"
#include "engine/serving/session_blob.h"
#include "engine/testing/random_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mambaserve/v1/session_blob.pb.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class SessionManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(
        WriteRandomModel(*PresetConfig("tiny", ModelType::kMamba), DType::kF32, 3, dir_.path())
            .ok());
    auto model = LoadModel(dir_.path());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    BackendOptions options;
    options.kind = BackendKind::kCpu;
    options.num_slots = 2;
    options.num_threads = 1;
    backend_ = std::move(*CreateBackend(model_, options));
  }

  std::unique_ptr<SessionManager> Make(int64_t host_budget_bytes = int64_t{1} << 30,
                                       int64_t ttl_ms = 0, int64_t max_sessions = 1 << 20,
                                       std::string blob_key = "") {
    SessionManagerOptions options;
    options.blob_key = std::move(blob_key);
    options.max_sessions = max_sessions;
    options.host_budget_bytes = host_budget_bytes;
    options.ttl_ms = ttl_ms;
    options.now_ms = [this] { return now_ms_; };
    return std::make_unique<SessionManager>(backend_.get(), model_->fingerprint, options);
  }

  // One turn: feeds `tokens` into the session's slot.
  void Turn(SessionManager& sm, const std::string& id, std::vector<int32_t> tokens) {
    ++now_ms_;
    ASSERT_TRUE(sm.Reserve(id).ok());
    auto turn = sm.BeginTurn(id);
    ASSERT_TRUE(turn.ok()) << turn.status();
    Step step;
    step.sequences.push_back({turn->slot, tokens, turn->start_fresh, false});
    StepOutput out;
    ASSERT_TRUE(backend_->Forward(step, &out).ok());
    sm.CommitTurn(id, turn->length + static_cast<int64_t>(tokens.size()), {});
  }

  std::vector<uint8_t> State(int slot) {
    std::vector<uint8_t> s(backend_->config().state_bytes());
    EXPECT_TRUE(backend_->ReadSlot(slot, s).ok());
    return s;
  }

  testing::TempDir dir_;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Backend> backend_;
  int64_t now_ms_ = 1000;
};

TEST_F(SessionManagerTest, IdleSessionsAreParkedLruAndRestoredExactly) {
  auto sm = Make();
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(sm->Create(id).ok());
  Turn(*sm, "a", {1, 2, 3});
  Turn(*sm, "b", {4, 5});
  const auto a_state = State(0);  // "a" took the first free slot
  EXPECT_EQ(sm->Get("a")->location, StateLocation::kDevice);
  EXPECT_EQ(sm->Gauges().slots_idle, 2);

  Turn(*sm, "c", {6});  // no free slot: "a" (least recently used) is parked
  EXPECT_EQ(sm->Get("a")->location, StateLocation::kHost);
  EXPECT_EQ(sm->Get("b")->location, StateLocation::kDevice);
  EXPECT_EQ(sm->Gauges().parked, 1);
  EXPECT_EQ(sm->Gauges().parked_bytes, backend_->config().state_bytes());

  ASSERT_TRUE(sm->Reserve("a").ok());
  auto turn = sm->BeginTurn("a");  // restores into the slot "b" gives up
  ASSERT_TRUE(turn.ok());
  EXPECT_FALSE(turn->start_fresh);
  EXPECT_EQ(turn->length, 3);
  EXPECT_EQ(State(turn->slot), a_state);
  EXPECT_EQ(sm->Get("b")->location, StateLocation::kHost);
  sm->CommitTurn("a", 3, {});
  EXPECT_EQ(sm->Gauges().restored_total, 1);
  EXPECT_EQ(sm->Gauges().parked_total, 2);
}

TEST_F(SessionManagerTest, RunningSequencesAreNeverParked) {
  auto sm = Make();
  ASSERT_TRUE(sm->AcquireSlot().ok());
  ASSERT_TRUE(sm->Create("a").ok());
  Turn(*sm, "a", {1});
  ASSERT_TRUE(sm->Reserve("a").ok());
  ASSERT_TRUE(sm->BeginTurn("a").ok());
  EXPECT_TRUE(absl::IsUnavailable(sm->AcquireSlot().status()));
  sm->CommitTurn("a", 2, {});
  EXPECT_TRUE(sm->AcquireSlot().ok());  // parks "a"
  EXPECT_EQ(sm->Get("a")->location, StateLocation::kHost);
}

TEST_F(SessionManagerTest, OverTheHostBudgetTheOldestParkedAreEvictedAndSaySo) {
  auto sm =
      Make(/*host_budget_bytes=*/backend_->config().state_bytes());  // room for one parked state
  for (const char* id : {"a", "b", "c", "d"}) ASSERT_TRUE(sm->Create(id).ok());
  Turn(*sm, "a", {1});
  Turn(*sm, "b", {2});
  Turn(*sm, "c", {3});  // parks a
  Turn(*sm, "d", {4});  // parks b: over budget, a (older) is evicted
  EXPECT_EQ(sm->Get("b")->location, StateLocation::kHost);
  auto gone = sm->Get("a");
  EXPECT_TRUE(absl::IsNotFound(gone.status()));
  EXPECT_THAT(std::string(gone.status().message()), HasSubstr("evicted"));
  EXPECT_TRUE(absl::IsNotFound(sm->Reserve("a")));
  EXPECT_EQ(sm->Gauges().evicted_total, 1);
  EXPECT_EQ(sm->Gauges().sessions, 3);
}

TEST_F(SessionManagerTest, IdleSessionsExpireAfterTheTtlButBusyOnesDoNot) {
  auto sm = Make(int64_t{1} << 30, /*ttl_ms=*/60000);
  ASSERT_TRUE(sm->Create("idle").ok());
  ASSERT_TRUE(sm->Create("busy").ok());
  Turn(*sm, "idle", {1});
  ASSERT_TRUE(sm->Reserve("busy").ok());
  now_ms_ += 59000;
  EXPECT_EQ(sm->ExpireIdle(), 0);
  now_ms_ += 2000;
  EXPECT_EQ(sm->ExpireIdle(), 1);
  auto gone = sm->Get("idle");
  EXPECT_TRUE(absl::IsNotFound(gone.status()));
  EXPECT_THAT(std::string(gone.status().message()), HasSubstr("expired"));
  EXPECT_TRUE(sm->Get("busy").ok());
  EXPECT_EQ(sm->Gauges().slots_idle, 0);  // the expired session's slot is free again
}

TEST_F(SessionManagerTest, OneRequestPerSessionAndNoDeleteWhileBusy) {
  auto sm = Make();
  ASSERT_TRUE(sm->Create("a").ok());
  ASSERT_TRUE(sm->Reserve("a").ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(sm->Reserve("a")));
  EXPECT_TRUE(absl::IsFailedPrecondition(sm->Delete("a")));
  EXPECT_TRUE(absl::IsFailedPrecondition(sm->Export("a").status()));
  sm->CancelReservation("a");
  EXPECT_TRUE(sm->Delete("a").ok());
  EXPECT_THAT(std::string(sm->Get("a").status().message()), HasSubstr("deleted"));
  EXPECT_TRUE(absl::IsNotFound(sm->Reserve("never")));
  ASSERT_TRUE(sm->Create("x").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(sm->Create("x").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(sm->Create("bad id!").status()));
}

TEST_F(SessionManagerTest, ExportImportRoundTripsStateLengthAndPendingTokens) {
  auto sm = Make();
  ASSERT_TRUE(sm->Create("a").ok());
  Turn(*sm, "a", {1, 2, 3, 4});
  ASSERT_TRUE(sm->Reserve("a").ok());
  auto turn = sm->BeginTurn("a");
  ASSERT_TRUE(turn.ok());
  const auto state = State(turn->slot);
  sm->CommitTurn("a", 5, {42});
  auto blob = sm->Export("a");
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(sm->Delete("a").ok());

  auto imported = sm->Import("b", {reinterpret_cast<const uint8_t*>(blob->data()), blob->size()});
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->length, 5);
  EXPECT_EQ(imported->location, StateLocation::kHost);
  ASSERT_TRUE(sm->Reserve("b").ok());
  auto b = sm->BeginTurn("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->pending_tokens, std::vector<int32_t>{42});
  EXPECT_EQ(State(b->slot), state);
}

TEST_F(SessionManagerTest, SessionCountIsBounded) {
  auto sm = Make(int64_t{1} << 30, 0, /*max_sessions=*/2);
  ASSERT_TRUE(sm->Create("a").ok());
  const std::string blob = *sm->Export("a");
  ASSERT_TRUE(sm->Create("b").ok());
  absl::Status full = sm->Create("c").status();
  EXPECT_TRUE(absl::IsResourceExhausted(full));
  EXPECT_THAT(std::string(full.message()), HasSubstr("maximum of 2 sessions"));
  EXPECT_TRUE(absl::IsResourceExhausted(
      sm->Import("d", {reinterpret_cast<const uint8_t*>(blob.data()), blob.size()}).status()));
  ASSERT_TRUE(sm->Delete("b").ok());
  EXPECT_TRUE(sm->Create("c").ok());
}

// Feeds `tokens` into a turn's slot without ending the turn.
void Feed(Backend& backend, const SessionTurn& turn, std::vector<int32_t> tokens) {
  Step step;
  step.sequences.push_back({turn.slot, tokens, turn.start_fresh, false});
  StepOutput out;
  ASSERT_TRUE(backend.Forward(step, &out).ok());
}

TEST_F(SessionManagerTest, ATurnThatDoesNotCompleteLeavesTheSessionExactlyAsItWas) {
  auto sm = Make();
  for (const char* id : {"resident", "parked", "fresh"}) ASSERT_TRUE(sm->Create(id).ok());
  Turn(*sm, "parked", {1, 2});
  Turn(*sm, "resident", {3, 4, 5});
  ASSERT_TRUE(sm->Reserve("resident").ok());
  ASSERT_TRUE(sm->BeginTurn("resident").ok());
  sm->CommitTurn("resident", 4, {9});  // pending: the last sampled token
  const std::string resident_before = *sm->Export("resident");
  const std::string parked_before = *sm->Export("parked");

  // A resident session: the turn advanced its slot, then was cancelled.
  ASSERT_TRUE(sm->Reserve("resident").ok());
  auto turn = sm->BeginTurn("resident");
  ASSERT_TRUE(turn.ok());
  EXPECT_EQ(turn->pending_tokens, std::vector<int32_t>{9});
  Feed(*backend_, *turn, {9, 6, 7, 8});
  sm->RollBackTurn("resident");
  EXPECT_EQ(*sm->Export("resident"), resident_before);
  EXPECT_EQ(sm->Get("resident")->location, StateLocation::kDevice);
  EXPECT_FALSE(sm->Get("resident")->busy);

  // A parked one: restored into a slot (parking "resident"), fed, rolled back.
  ASSERT_TRUE(sm->Reserve("parked").ok());
  turn = sm->BeginTurn("parked");
  ASSERT_TRUE(turn.ok());
  Feed(*backend_, *turn, {6, 7});
  sm->RollBackTurn("parked");
  EXPECT_EQ(*sm->Export("parked"), parked_before);
  EXPECT_EQ(*sm->Export("resident"), resident_before);

  // A session never used goes back to having no state, and its slot is free again.
  const SessionGauges gauges = sm->Gauges();
  ASSERT_TRUE(sm->Reserve("fresh").ok());
  turn = sm->BeginTurn("fresh");
  ASSERT_TRUE(turn.ok());
  EXPECT_TRUE(turn->start_fresh);
  Feed(*backend_, *turn, {1});
  sm->RollBackTurn("fresh");
  EXPECT_EQ(sm->Get("fresh")->location, StateLocation::kNone);
  EXPECT_EQ(sm->Get("fresh")->length, 0);
  EXPECT_EQ(sm->Gauges().slots_running, 0);
  EXPECT_EQ(sm->Gauges().slots_idle + sm->Gauges().parked, gauges.slots_idle + gauges.parked);
}

TEST_F(SessionManagerTest, AnEmptyPromptIsRefusedUnlessTheSessionHasATokenToContinueFrom) {
  auto sm = Make();
  ASSERT_TRUE(sm->Create("a").ok());
  absl::Status empty = sm->Reserve("a", /*prompt_is_empty=*/true);
  EXPECT_TRUE(absl::IsInvalidArgument(empty));
  EXPECT_THAT(std::string(empty.message()), HasSubstr("no generated token to continue from"));
  EXPECT_FALSE(sm->Get("a")->busy);
  ASSERT_TRUE(sm->Reserve("a").ok());
  ASSERT_TRUE(sm->BeginTurn("a").ok());
  sm->CommitTurn("a", 3, {7});
  EXPECT_TRUE(sm->Reserve("a", /*prompt_is_empty=*/true).ok());
}

TEST_F(SessionManagerTest, RecreatingTheSameIdLeavesNoStaleEntries) {
  auto sm = Make(int64_t{1} << 30, /*ttl_ms=*/1000);
  for (int i = 0; i < 20000; ++i) {
    ASSERT_TRUE(sm->Create("chat").ok());
    if (i % 2 == 0) {
      ASSERT_TRUE(sm->Delete("chat").ok());
    } else {
      now_ms_ += 2000;  // expire -> re-create
      ASSERT_EQ(sm->ExpireIdle(), 1);
    }
  }
  EXPECT_EQ(sm->TombstoneEntriesForTest(), 1u);
  EXPECT_THAT(std::string(sm->Get("chat").status().message()), HasSubstr("expired"));
}

// The O(1) gauges never drift from what List() shows, whatever the sequence of operations.
TEST_F(SessionManagerTest, GaugesAgreeWithTheSessionsUnderRandomOperations) {
  auto sm = Make(/*host_budget_bytes=*/3 * backend_->config().state_bytes(), /*ttl_ms=*/50);
  std::mt19937 rng(5);
  const std::vector<std::string> ids = {"a", "b", "c", "d", "e", "f"};
  for (int i = 0; i < 600; ++i) {
    const std::string& id = ids[rng() % ids.size()];
    switch (rng() % 6) {
      case 0:
        (void)sm->Create(id);
        break;
      case 1:
        (void)sm->Delete(id);
        break;
      case 2:
      case 3: {
        if (!sm->Reserve(id).ok()) break;
        auto turn = sm->BeginTurn(id);
        if (!turn.ok()) {
          sm->CancelReservation(id);
          break;
        }
        Feed(*backend_, *turn, {static_cast<int32_t>(rng() % 50)});
        if (rng() % 3 == 0) {
          sm->RollBackTurn(id);
        } else {
          sm->CommitTurn(id, turn->length + 1, {});
        }
        break;
      }
      case 4:
        now_ms_ += 20;
        sm->ExpireIdle();
        break;
      case 5:
        if (auto blob = sm->Export(id); blob.ok()) {
          (void)sm->Import(id + "-copy",
                           {reinterpret_cast<const uint8_t*>(blob->data()), blob->size()});
        }
        break;
    }
    const std::vector<SessionInfo> list = sm->List();
    const SessionGauges g = sm->Gauges();
    int parked = 0, resident = 0;
    for (const SessionInfo& info : list) {
      parked += info.location == StateLocation::kHost;
      resident += info.location == StateLocation::kDevice;
    }
    ASSERT_EQ(g.sessions, static_cast<int>(list.size())) << "after operation " << i;
    ASSERT_EQ(g.parked, parked) << "after operation " << i;
    ASSERT_EQ(g.parked_bytes, parked * backend_->config().state_bytes()) << "after operation " << i;
    ASSERT_EQ(g.slots_idle, resident) << "after operation " << i;
    ASSERT_EQ(g.slots_running, 0) << "after operation " << i;
    ASSERT_LE(g.parked_bytes, 3 * backend_->config().state_bytes()) << "after operation " << i;
  }
}

// Forwards to a real backend; ReadSlot fails once `fail_reads` is set.
class FailingReadBackend : public Backend {
 public:
  explicit FailingReadBackend(Backend* inner) : inner_(inner) {}
  const ModelConfig& config() const override { return inner_->config(); }
  BackendInfo info() const override { return inner_->info(); }
  absl::Status Forward(const Step& step, StepOutput* out) override {
    return inner_->Forward(step, out);
  }
  absl::Status ResetSlot(int slot) override { return inner_->ResetSlot(slot); }
  absl::Status ReadSlot(int slot, std::span<uint8_t> out) override {
    if (fail_reads) return absl::ResourceExhaustedError("device fault");
    return inner_->ReadSlot(slot, out);
  }
  absl::Status WriteSlot(int slot, std::span<const uint8_t> in) override {
    return inner_->WriteSlot(slot, in);
  }
  bool fail_reads = false;

 private:
  Backend* inner_;
};

// A reserved session whose state cannot be parked stays until its waiting request ends, so the
// reservation can never land on a session re-created under the same id; the request fails
// (not retried as if no slot were free), then the session is gone with the reason.
TEST_F(SessionManagerTest, AReservedSessionWhoseStateIsLostEndsWithItsRequest) {
  FailingReadBackend failing(backend_.get());
  SessionManagerOptions options;
  options.now_ms = [this] { return now_ms_; };
  SessionManager sm(&failing, model_->fingerprint, options);
  for (const char* id : {"a", "b"}) ASSERT_TRUE(sm.Create(id).ok());
  Turn(sm, "a", {1, 2});
  Turn(sm, "b", {3});
  ASSERT_TRUE(sm.Reserve("a").ok());  // a request for "a" waits in the queue
  failing.fail_reads = true;
  ASSERT_TRUE(sm.AcquireSlot().ok());  // parks "a" (least recently used): the read fails
  EXPECT_TRUE(absl::IsAlreadyExists(sm.Create("a").status()));
  absl::Status turn = sm.BeginTurn("a").status();
  EXPECT_TRUE(absl::IsInternal(turn)) << turn;
  EXPECT_THAT(std::string(turn.message()), HasSubstr("could not be saved"));
  sm.CancelReservation("a");
  absl::Status gone = sm.Get("a").status();
  EXPECT_TRUE(absl::IsNotFound(gone));
  EXPECT_THAT(std::string(gone.message()), HasSubstr("could not be saved"));
  EXPECT_TRUE(sm.Create("a").ok());
}

TEST_F(SessionManagerTest, ATurnNeedsAReservation) {
  auto sm = Make();
  ASSERT_TRUE(sm->Create("a").ok());
  EXPECT_TRUE(absl::IsInternal(sm->BeginTurn("a").status()));
  ASSERT_TRUE(sm->Reserve("a").ok());
  ASSERT_TRUE(sm->BeginTurn("a").ok());
  EXPECT_TRUE(absl::IsInternal(sm->BeginTurn("a").status()));  // already in its turn
}

TEST_F(SessionManagerTest, ImportRefusesCorruptBlobsAndOtherModels) {
  auto sm = Make();
  ASSERT_TRUE(sm->Create("a").ok());
  Turn(*sm, "a", {1, 2});
  const std::string blob = *sm->Export("a");
  auto import = [&](const std::string& bytes, const std::string& id) {
    return sm->Import(id, {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}).status();
  };

  std::string flipped = blob;
  flipped[flipped.size() / 2] ^= 0x40;
  absl::Status s = import(flipped, "x");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("checksum"));

  s = import(blob.substr(0, blob.size() - 10), "x");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  s = import("garbage", "x");
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not parse as a mambaserve.v1.SessionBlob"));
  // A blob of the first release's fixed layout is refused, naming its version.
  s = import(std::string("MSSB\x01\0\0\0", 8) + std::string(100, '\0'), "x");
  EXPECT_THAT(std::string(s.message()), HasSubstr("format version 1"));

  // A well-formed blob from another model.
  SessionBlob other =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  other.model_fingerprint = "0123456789abcdef";
  s = import(EncodeSessionBlob(other), "x");
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("different model"));

  // The right model but the wrong state size.
  SessionBlob resized =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  resized.state.resize(resized.state.size() - 4);
  EXPECT_TRUE(absl::IsInvalidArgument(import(EncodeSessionBlob(resized), "x")));
  // A consistent blob of another shape: the message names both shapes.
  SessionBlob reshaped =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  reshaped.shape.d_state *= 2;
  reshaped.state.resize(reshaped.shape.conv_bytes() + reshaped.shape.ssm_bytes());
  s = import(EncodeSessionBlob(reshaped), "x");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("this model's state is conv ["));
  EXPECT_FALSE(sm->Get("x").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(import(blob, "a")));

  // Well-formed but hostile: non-finite state, an absurd length, too many pending tokens.
  SessionBlob poisoned =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(poisoned.state.data() + 8, &nan, 4);
  EXPECT_THAT(std::string(import(EncodeSessionBlob(poisoned), "x").message()),
              HasSubstr("NaN or Inf"));
  SessionBlob long_one =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  long_one.length = int64_t{1} << 60;
  EXPECT_THAT(std::string(import(EncodeSessionBlob(long_one), "x").message()),
              HasSubstr("implausible length"));
  SessionBlob chatty =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  chatty.pending_tokens.assign(8193, 1);  // one past the prompt limit
  EXPECT_THAT(std::string(import(EncodeSessionBlob(chatty), "x").message()),
              HasSubstr("pending tokens"));
  EXPECT_FALSE(sm->Get("x").ok());
}

// With --session-blob-key, exports carry an HMAC and only blobs signed with the same key are
// imported: not an unsigned one, not one signed with another key, not one whose contents were
// changed and whose checksum was recomputed (what a forger can do; the CRC only catches accidents).
TEST_F(SessionManagerTest, WithABlobKeyOnlyBlobsSignedWithItAreImported) {
  const std::string key(32, 'k');
  auto signer = Make(int64_t{1} << 30, 0, 1 << 20, key);
  ASSERT_TRUE(signer->Create("a").ok());
  Turn(*signer, "a", {1, 2});
  const std::string signed_blob = *signer->Export("a");
  auto bytes = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  auto keyed = Make(int64_t{1} << 30, 0, 1 << 20, key);
  ASSERT_TRUE(keyed->Import("copy", bytes(signed_blob)).ok());

  SessionBlob contents = *DecodeSessionBlob(bytes(signed_blob));
  absl::Status s = keyed->Import("unsigned", bytes(EncodeSessionBlob(contents))).status();
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("not signed"));
  s = keyed->Import("other", bytes(EncodeSessionBlob(contents, std::string(32, 'x')))).status();
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not match"));
  // Forged contents under the original signature: a longer conversation, checksum recomputed.
  v1::SessionBlob forged;
  ASSERT_TRUE(forged.ParseFromString(signed_blob));
  const std::string hmac = forged.hmac_sha256();
  contents.length += 100;
  ASSERT_TRUE(forged.ParseFromString(EncodeSessionBlob(contents)));
  forged.set_hmac_sha256(hmac);
  s = keyed->Import("forged", bytes(forged.SerializeAsString())).status();
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  // A server without a key imports signed blobs too (it checks the checksum only).
  EXPECT_TRUE(Make()->Import("plain", bytes(signed_blob)).ok());
}

// Owner scopes ("OWNER/NAME"): the same name lives independently under two owners; a lookup in
// another scope fails exactly as one for a name that does not exist; listing filters by scope; a
// random name keeps its scope; messages show the name only.
TEST_F(SessionManagerTest, OwnerScopesKeepOwnersApart) {
  auto sm = Make();
  ASSERT_TRUE(sm->Create("alice/chat").ok());
  ASSERT_TRUE(sm->Create("bob/chat").ok());
  const absl::StatusOr<SessionInfo> made = sm->Create("alice/");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE(made->id.starts_with("alice/")) << made->id;
  EXPECT_TRUE(
      SessionManager::ValidateSessionId(std::string(SessionManager::SessionName(made->id))).ok());
  EXPECT_GE(SessionManager::SessionName(made->id).size(), 32u);  // 128 random bits

  const absl::Status across = sm->Get("carol/chat").status();
  const absl::Status absent = sm->Get("carol/nothing").status();
  EXPECT_TRUE(absl::IsNotFound(across));
  EXPECT_EQ(std::string(across.message()),
            absl::StrReplaceAll(std::string(absent.message()), {{"nothing", "chat"}}));
  EXPECT_THAT(std::string(across.message()), ::testing::Not(HasSubstr("carol")));

  std::vector<std::string> alices;
  for (const SessionInfo& s : sm->List("alice/")) alices.push_back(s.id);
  EXPECT_THAT(alices, ::testing::UnorderedElementsAre(made->id, "alice/chat"));
  EXPECT_EQ(sm->List().size(), 3u);
  EXPECT_TRUE(sm->Delete("bob/chat").ok());
  EXPECT_TRUE(sm->Get("alice/chat").ok());
  EXPECT_TRUE(absl::IsInvalidArgument(sm->Create("alice/bad name").status()));
}

TEST_F(SessionManagerTest, EachOwnerHoldsAtMostItsQuotaOfSessions) {
  SessionManagerOptions options;
  options.max_sessions_per_owner = 2;
  SessionManager sm(backend_.get(), model_->fingerprint, options);
  ASSERT_TRUE(sm.Create("alice/a").ok());
  ASSERT_TRUE(sm.Create("alice/").ok());
  const absl::Status over = sm.Create("alice/c").status();
  EXPECT_TRUE(absl::IsResourceExhausted(over)) << over;
  EXPECT_THAT(std::string(over.message()), HasSubstr("--max-sessions-per-principal"));
  EXPECT_TRUE(sm.Create("bob/a").ok());  // another owner's quota is its own
  EXPECT_TRUE(sm.Create("unscoped-1").ok());
  EXPECT_TRUE(sm.Create("unscoped-2").ok());
  EXPECT_TRUE(sm.Create("unscoped-3").ok());  // unscoped ids have no owner quota
  ASSERT_TRUE(sm.Delete("alice/a").ok());
  EXPECT_TRUE(sm.Create("alice/c").ok());
}

TEST(SessionBlobTest, EncodeDecodeRoundTrip) {
  SessionBlob blob;
  blob.model_fingerprint = "abc";
  blob.length = 77;
  blob.pending_tokens = {5, 6};
  blob.shape = {.n_layers = 1, .d_inner = 1, .d_conv = 2, .d_state = 1};  // 4 + 4 bytes
  blob.state = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::string bytes = EncodeSessionBlob(blob);
  auto decoded = DecodeSessionBlob({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->model_fingerprint, "abc");
  EXPECT_EQ(decoded->length, 77);
  EXPECT_EQ(decoded->pending_tokens, blob.pending_tokens);
  EXPECT_EQ(decoded->shape, blob.shape);
  EXPECT_EQ(decoded->state, blob.state);
  // Every truncation is refused: protobuf would parse one cut between fields, but the checksum
  // is written last.
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(DecodeSessionBlob({reinterpret_cast<const uint8_t*>(bytes.data()), n}).ok()) << n;
  }
}

TEST(SessionBlobTest, IsAProtobufMessageWithNamedTensors) {
  SessionBlob blob;
  blob.model_fingerprint = "abc";
  blob.length = 3;
  blob.shape = {.n_layers = 2, .d_inner = 3, .d_conv = 4, .d_state = 5};
  blob.state.resize(blob.shape.conv_bytes() + blob.shape.ssm_bytes(), 0);
  v1::SessionBlob message;
  ASSERT_TRUE(message.ParseFromString(EncodeSessionBlob(blob)));
  EXPECT_EQ(message.format_version(), kSessionBlobVersion);
  ASSERT_EQ(message.state_size(), 2);
  EXPECT_EQ(message.state(0).name(), "conv_state");
  EXPECT_EQ(message.state(0).dtype(), "F32");
  EXPECT_THAT(message.state(0).shape(), ElementsAre(2, 3, 3));
  EXPECT_EQ(message.state(0).data().size(), 2u * 3 * 3 * 4);
  EXPECT_EQ(message.state(1).name(), "ssm_state");
  EXPECT_THAT(message.state(1).shape(), ElementsAre(2, 3, 5));

  // A later format version is refused by number.
  message.set_format_version(3);
  const std::string later = message.SerializeAsString();
  absl::StatusOr<SessionBlob> refused =
      DecodeSessionBlob({reinterpret_cast<const uint8_t*>(later.data()), later.size()});
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("format version 3"));
}

TEST(SessionBlobTest, Crc32MatchesTheStandardCheckValue) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
}

}  // namespace
}  // namespace mambaserve
