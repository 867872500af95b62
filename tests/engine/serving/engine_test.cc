// The Engine front door: load + backend + warm-up + scheduler in one call, generation through
// Submit, session operations that run off the scheduler thread, and sizes refused up front.
#include "engine/engine.h"

#include <cstring>
#include <fstream>
#include <future>
#include <thread>

#include "engine/serving/session_blob.h"
#include "engine/testing/bpe_tokenizer_writer.h"
#include "engine/testing/random_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/engine_calls.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ModelConfig config = *PresetConfig("tiny", ModelType::kMamba);
    config.eos_token_id = -1;
    ASSERT_TRUE(WriteRandomModel(config, DType::kF32, 3, dir_->path()).ok());
    std::ofstream(dir_->file("tokenizer.json")) << *TrainByteLevelBpeJson(512);
  }
  static void TearDownTestSuite() { delete dir_; }

  static EngineOptions Options() {
    EngineOptions options;
    options.model_dir = dir_->path();
    options.backend.kind = BackendKind::kCpu;
    options.backend.num_slots = 4;
    options.backend.num_threads = 1;
    options.scheduler.max_batch = 4;
    options.max_prompt_tokens = 64;
    return options;
  }

  static absl::StatusOr<std::vector<int32_t>> Generate(Engine& engine, std::vector<int32_t> prompt,
                                                       int max_tokens, std::string session = "",
                                                       int logprobs = 0) {
    return GenerateGreedy(engine, std::move(prompt), max_tokens, std::move(session), logprobs);
  }

  static testing::TempDir* dir_;
};
testing::TempDir* EngineTest::dir_;

// A finite but huge imported state (every float +-3e38) overflows the forward pass: the turn ends
// with an error naming the cause, on the greedy path where only the backend's argmax comes back
// and on the path that samples from the logits, never as a token or a NaN logprob. Other sessions
// are untouched.
TEST_F(EngineTest, AStateThatMakesTheLogitsNonFiniteEndsTheTurnWithAnError) {
  auto engine = std::move(*Engine::Create(Options()));
  Await<SessionInfo> created;
  engine->CreateSession("good", created.callback());
  ASSERT_TRUE(created.get().ok());
  ASSERT_TRUE(Generate(*engine, {1, 2, 3}, 2, "good").ok());
  Await<std::string> exported;
  engine->ExportSession("good", exported.callback());
  const std::string bytes = *exported.get();
  SessionBlob blob =
      *DecodeSessionBlob({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  for (size_t i = 0; i + 4 <= blob.state.size(); i += 4) {
    const float huge = (i / 4) % 2 ? 3e38f : -3e38f;
    std::memcpy(blob.state.data() + i, &huge, 4);
  }
  const std::string crafted = EncodeSessionBlob(blob);
  Await<SessionInfo> imported;
  engine->ImportSession("crafted",
                        {reinterpret_cast<const uint8_t*>(crafted.data()), crafted.size()},
                        imported.callback());
  const absl::StatusOr<SessionInfo> crafted_info = imported.get();
  ASSERT_TRUE(crafted_info.ok()) << "a finite state passes the import checks";

  for (int logprobs : {0, 2}) {  // the backend's argmax, then the sampler on the logits
    absl::StatusOr<std::vector<int32_t>> refused = Generate(*engine, {4}, 3, "crafted", logprobs);
    EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("non-finite logits"));
  }
  Await<SessionInfo> after;
  engine->GetSession("crafted", after.callback());
  EXPECT_EQ(after.get()->length, crafted_info->length)
      << "failed turns leave the session as it was";
  EXPECT_TRUE(Generate(*engine, {4}, 3, "good").ok());
}

TEST_F(EngineTest, CreatesServesAndDescribesTheModel) {
  auto engine = Engine::Create(Options());
  ASSERT_TRUE(engine.ok()) << engine.status();
  const EngineInfo& info = (*engine)->info();
  EXPECT_EQ(info.backend.name, "cpu");
  EXPECT_EQ(info.backend.num_slots, 4);
  EXPECT_EQ(info.tokenizer_vocab_size, 512);
  EXPECT_FALSE(info.fingerprint.empty());
  EXPECT_GT(info.max_session_blob_bytes, static_cast<size_t>(info.config.state_bytes()));
  ASSERT_NE((*engine)->tokenizer(), nullptr);
  auto tokens = Generate(**engine, {1, 2, 3}, 5);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 5u);
}

TEST_F(EngineTest, SessionOperationsRunOffTheSchedulerThreadAndRoundTrip) {
  EngineOptions options = Options();
  std::promise<std::thread::id> scheduler_thread;
  auto once = std::make_shared<std::once_flag>();
  options.scheduler.on_step = [&scheduler_thread, once](const SchedulerStats&) {
    std::call_once(*once, [&] { scheduler_thread.set_value(std::this_thread::get_id()); });
  };
  auto engine = std::move(*Engine::Create(options));

  Await<SessionInfo> created;
  engine->CreateSession("chat", created.callback());
  ASSERT_TRUE(created.get().ok());
  ASSERT_TRUE(Generate(*engine, {5, 6, 7}, 4, "chat").ok());
  const std::thread::id scheduler = scheduler_thread.get_future().get();

  Await<std::string> exported;
  engine->ExportSession("chat", exported.callback());
  absl::StatusOr<std::string> blob = exported.get();
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_NE(exported.thread(), scheduler) << "the blob was encoded on the scheduler thread";

  Await<SessionInfo> imported;
  engine->ImportSession("copy", {reinterpret_cast<const uint8_t*>(blob->data()), blob->size()},
                        imported.callback());
  absl::StatusOr<SessionInfo> copy = imported.get();
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->length, 7);
  EXPECT_NE(imported.thread(), scheduler) << "the blob was decoded on the scheduler thread";
  // Both continue identically.
  EXPECT_EQ(*Generate(*engine, {9}, 6, "chat"), *Generate(*engine, {9}, 6, "copy"));

  Await<std::vector<SessionInfo>> listed;
  engine->ListSessions("", listed.callback());
  auto list = listed.get();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, "chat");
  EXPECT_EQ((*list)[1].id, "copy");

  std::promise<absl::Status> deleted;
  engine->DeleteSession("copy", [&deleted](absl::Status s) { deleted.set_value(s); });
  EXPECT_TRUE(deleted.get_future().get().ok());
  Await<SessionInfo> gone;
  engine->GetSession("copy", gone.callback());
  EXPECT_TRUE(absl::IsNotFound(gone.get().status()));
}

TEST_F(EngineTest, ImportBoundsPendingTokensByThePromptLimit) {
  auto engine = std::move(*Engine::Create(Options()));  // max_prompt_tokens 64
  SessionBlob blob;
  blob.model_fingerprint = engine->info().fingerprint;
  blob.pending_tokens.assign(65, 1);
  const std::string bytes = EncodeSessionBlob(blob);
  Await<SessionInfo> imported;
  engine->ImportSession("x", {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                        imported.callback());
  absl::Status refused = imported.get().status();
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("pending tokens"));

  // A blob larger than any session of this model is refused before it is decoded.
  const std::string junk(engine->info().max_session_blob_bytes + 1, 'x');
  Await<SessionInfo> big;
  engine->ImportSession("y", {reinterpret_cast<const uint8_t*>(junk.data()), junk.size()},
                        big.callback());
  EXPECT_THAT(std::string(big.get().status().message()), HasSubstr("encodes to at most"));
}

// The backend's activation scratch covers the largest step the scheduler sends (its token budget,
// or the batch when that is larger), not the backend's default; longer prompts still run, over
// several steps.
TEST_F(EngineTest, PassScratchIsSizedByTheSchedulersLargestStep) {
  EngineOptions options = Options();
  EXPECT_EQ(options.backend.max_tokens_per_pass, 512);
  options.scheduler.max_step_tokens = 40;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->info().backend.max_rows_per_pass, 40);
  std::vector<int32_t> prompt(60);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(1 + i % 200);
  auto tokens = Generate(**engine, prompt, 3);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 3u);

  options.scheduler.max_step_tokens = 2;  // below the batch of 4: a step may hold 4 decodes
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->info().backend.max_rows_per_pass, 4);
}

TEST_F(EngineTest, SizesThisMachineCannotHoldAreRefusedNamingTheFlag) {
  EngineOptions options = Options();
  options.backend.num_slots = 1'000'000'000;
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(engine.status()));
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("--max-sessions"));

  options = Options();
  options.scheduler.max_batch = 2'000'000'000;
  options.backend.num_slots = 2'000'000'000;
  EXPECT_THAT(std::string(Engine::Create(options).status().message()), HasSubstr("GiB"));

  options = Options();
  options.scheduler.sessions.host_budget_bytes = int64_t{1} << 60;
  EXPECT_THAT(std::string(Engine::Create(options).status().message()),
              HasSubstr("--host-state-budget-mb"));
}

TEST_F(EngineTest, StopEndsRequestsAndRefusesLaterOperations) {
  auto engine = std::move(*Engine::Create(Options()));
  engine->Stop();
  GenerationRequest r;
  r.prompt = {1};
  r.sampling.max_tokens = 2;
  r.stream = std::make_shared<GenerationStream>();
  EXPECT_TRUE(absl::IsUnavailable(engine->Submit(std::move(r))));
  Await<SessionInfo> created;
  engine->CreateSession("late", created.callback());
  EXPECT_TRUE(absl::IsUnavailable(created.get().status()));
}

}  // namespace
}  // namespace mambaserve
