// The scheduler loop, driven step by step: batched = alone with seeds, chunked prefill fairness,
// cancellation and deadlines free slots, slow readers pause only themselves, stop conditions,
// session resume = one-shot, export/import continuity, a full admission queue.
#include "engine/serving/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <set>
#include <thread>

#include "engine/backend/backend.h"
#include "engine/backend_factory.h"
#include "engine/serving/session_blob.h"
#include "engine/testing/bpe_tokenizer_writer.h"
#include "engine/testing/random_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/scheduler_fixture.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

// Forwards to a real backend and counts the sequences that asked for their token only. Their
// logits rows are overwritten with NaN, as a backend that skips them (CUDA) may leave them: the
// scheduler must take their token from StepOutput::argmax.
class TokenOnlyCountingBackend : public Backend {
 public:
  explicit TokenOnlyCountingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  BackendInfo info() const override { return inner_->info(); }
  absl::Status Forward(const Step& step, StepOutput* out) override {
    absl::Status status = inner_->Forward(step, out);
    if (!status.ok()) return status;
    for (size_t i = 0; i < step.sequences.size(); ++i) {
      if (!step.sequences[i].want_logits) continue;
      if (!step.sequences[i].token_only) {
        ++full_rows;
        continue;
      }
      ++token_only_rows;
      const size_t row = static_cast<size_t>(out->row_of_sequence[i]) * out->vocab_size;
      std::fill_n(out->logits.begin() + row, out->vocab_size, std::nanf(""));
    }
    return absl::OkStatus();
  }
  absl::Status ResetSlot(int slot) override { return inner_->ResetSlot(slot); }
  absl::Status ReadSlot(int slot, std::span<uint8_t> out) override {
    return inner_->ReadSlot(slot, out);
  }
  absl::Status WriteSlot(int slot, std::span<const uint8_t> in) override {
    return inner_->WriteSlot(slot, in);
  }

  int token_only_rows = 0;
  int full_rows = 0;

 private:
  std::unique_ptr<Backend> inner_;
};

TEST_F(SchedulerTest, PlainGreedyRequestsAskForTheirTokenOnlyAndOthersForTheirLogits) {
  auto requests = [] {
    std::vector<SamplingParams> r(4, Greedy(8));
    r[1].temperature = 0.8;  // sampled
    r[1].seed = 5;
    r[2].logprobs = 2;              // greedy, but the logprobs need the row
    r[3].repetition_penalty = 1.3;  // greedy over penalised logits
    r.push_back(Greedy(8));
    return r;
  };
  auto run = [&](Scheduler& s) {
    std::vector<std::shared_ptr<GenerationStream>> streams;
    const auto params = requests();
    for (size_t i = 0; i < params.size(); ++i)
      streams.push_back(Submit(s, Prompt(4 + static_cast<int>(i), static_cast<int>(i)), params[i]));
    return RunAll(s, streams);
  };
  BackendOptions options;
  options.kind = BackendKind::kCpu;
  options.num_slots = 8;
  options.num_threads = 1;
  TokenOnlyCountingBackend counting(std::move(*CreateBackend(*model_, options)));
  Scheduler with_token_only(&counting, tokenizer_, (*model_)->fingerprint, {});
  const auto got = run(with_token_only);
  auto plain = Make(8);
  const auto want = run(*plain);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    EXPECT_EQ(got[i].tokens.size(), 8u);
  }
  EXPECT_EQ(counting.token_only_rows, 2 * 8);  // requests 0 and 4
  EXPECT_EQ(counting.full_rows, 3 * 8);
}

TEST_F(SchedulerTest, BatchedWithThirtyOneOthersEqualsAloneWithTheSameSeed) {
  auto make_params = [](int i) {
    SamplingParams p;
    p.temperature = 0.9;
    p.top_p = 0.95;
    p.top_k = 50;
    p.seed = 1000 + i;
    p.max_tokens = 12 + i % 5;
    return p;
  };
  auto batched = Make(32);
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < 32; ++i)
    streams.push_back(Submit(*batched, Prompt(3 + i % 7, i), make_params(i)));
  const auto together = RunAll(*batched, streams);
  EXPECT_EQ(batched->stats().Snapshot().running, 0);
  for (int i = 0; i < 32; ++i) {
    auto alone = Make(1);
    const auto result = RunAll(*alone, {Submit(*alone, Prompt(3 + i % 7, i), make_params(i))});
    EXPECT_EQ(together[i].tokens, result[0].tokens) << "request " << i;
    EXPECT_EQ(together[i].text, result[0].text) << "request " << i;
    EXPECT_EQ(together[i].reason, FinishReason::kLength);
  }
}

TEST_F(SchedulerTest, LongPromptIsPrefilledInChunksWhileOthersKeepDecoding) {
  SchedulerOptions options;
  options.max_step_tokens = 16;
  auto s = Make(4, options);
  auto a = Submit(*s, Prompt(4, 1), Greedy(1000));
  Result ra, rb;
  s->StepForTest();  // a: prefill + first token
  Drain(*a, ra);
  ASSERT_EQ(ra.tokens.size(), 1u);

  auto b = Submit(*s, Prompt(300, 2), Greedy(4));
  int steps = 0;
  while (rb.tokens.empty() && steps < 100) {
    const size_t before = ra.tokens.size();
    s->StepForTest();
    ++steps;
    Drain(*a, ra);
    Drain(*b, rb);
    EXPECT_EQ(ra.tokens.size(), before + 1) << "a missed a token at step " << steps;
    EXPECT_LE(s->stats().Snapshot().step_tokens, 16);
  }
  // 300 prompt tokens at 15 per step (one of the 16 goes to a's decode).
  EXPECT_EQ(steps, 20);
}

TEST_F(SchedulerTest, CancellationFreesTheSlotAtTheNextStep) {
  auto s = Make(1);
  auto a = Submit(*s, Prompt(5, 1), Greedy(1000));
  auto b = Submit(*s, Prompt(5, 2), Greedy(3));
  Result ra, rb;
  for (int i = 0; i < 5; ++i) s->StepForTest();
  Drain(*a, ra);
  Drain(*b, rb);
  EXPECT_EQ(ra.tokens.size(), 5u);
  EXPECT_TRUE(rb.tokens.empty());  // no slot for b yet
  EXPECT_EQ(s->stats().Snapshot().waiting, 1);

  a->Cancel();
  s->StepForTest();
  Drain(*a, ra);
  EXPECT_TRUE(ra.final);
  EXPECT_EQ(ra.reason, FinishReason::kCancelled);
  EXPECT_EQ(ra.tokens.size(), 5u);  // no work after the cancel
  const auto results = RunAll(*s, {b});
  EXPECT_EQ(results[0].tokens.size(), 3u);
  EXPECT_EQ(s->stats().Snapshot().slots_in_use, 0);
  EXPECT_EQ(s->stats().Snapshot().requests_cancelled, 1);
}

TEST_F(SchedulerTest, PastDeadlineRequestsEndWithDeadlineExceeded) {
  auto s = Make(2);
  GenerationRequest r;
  r.prompt = Prompt(3, 1);
  r.sampling = Greedy(1000);
  r.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
  r.stream = std::make_shared<GenerationStream>(1 << 20);
  auto stream = r.stream;
  ASSERT_TRUE(s->Submit(std::move(r)).ok());
  s->StepForTest();
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  const auto results = RunAll(*s, {stream});
  EXPECT_TRUE(absl::IsDeadlineExceeded(results[0].status));
  EXPECT_EQ(results[0].reason, FinishReason::kCancelled);
  EXPECT_LT(results[0].tokens.size(), 1000u);
}

TEST_F(SchedulerTest, SlowReaderPausesItsOwnSequenceOnly) {
  auto s = Make(2);
  auto slow = Submit(*s, Prompt(4, 1), Greedy(40), "", /*capacity=*/3);
  auto fast = Submit(*s, Prompt(4, 2), Greedy(40));
  Result rf;
  for (int i = 0; i < 60 && !rf.final; ++i) {
    s->StepForTest();
    Drain(*fast, rf);
  }
  EXPECT_TRUE(rf.final);
  EXPECT_EQ(rf.tokens.size(), 40u);
  EXPECT_EQ(s->stats().Snapshot().paused, 1);

  Result rs;
  Drain(*slow, rs);
  EXPECT_EQ(rs.tokens.size(), 3u);  // never more than its buffer
  const auto rest = RunAll(*s, {slow});
  rs.tokens.insert(rs.tokens.end(), rest[0].tokens.begin(), rest[0].tokens.end());
  auto alone = Make(1);
  EXPECT_EQ(rs.tokens, RunAll(*alone, {Submit(*alone, Prompt(4, 1), Greedy(40))})[0].tokens);
}

TEST_F(SchedulerTest, AReaderStalledPastTheTimeoutLosesItsSlot) {
  SchedulerOptions options;
  options.stalled_reader_timeout_ms = 50;
  auto s = Make(1, options);
  auto stalled = Submit(*s, Prompt(4, 1), Greedy(100), "", /*capacity=*/2);
  auto next = Submit(*s, Prompt(4, 2), Greedy(3));
  for (int i = 0; i < 5; ++i) s->StepForTest();  // fills the stalled stream's buffer; it pauses
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  const auto results = RunAll(*s, {next});
  EXPECT_EQ(results[0].tokens.size(), 3u);  // got the slot the stalled stream held
  Result r;
  Drain(*stalled, r);
  EXPECT_TRUE(r.final);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("read nothing"));
}

TEST_F(SchedulerTest, StopStringsMatchAcrossTokenBoundariesAndAreNotReturned) {
  auto s = Make(1);
  const auto full = RunAll(*s, {Submit(*s, Prompt(6, 3), Greedy(40))})[0];
  // A two-character stop string whose first occurrence straddles two tokens' text.
  std::string stop;
  size_t offset = 0;
  for (size_t i = 0; i + 1 < full.pieces.size() && stop.empty(); ++i) {
    offset += full.pieces[i].size();
    const std::string& left = full.pieces[i];
    const std::string& right = full.pieces[i + 1];
    if (left.empty() || right.empty()) continue;
    const std::string candidate = {left.back(), right.front()};
    if (candidate[0] > ' ' && candidate[0] < 127 && candidate[1] > ' ' && candidate[1] < 127 &&
        full.text.find(candidate) == offset - 1) {
      stop = candidate;
    }
  }
  ASSERT_FALSE(stop.empty()) << full.text;
  SamplingParams p = Greedy(40);
  p.stop = {stop};
  const auto cut = RunAll(*s, {Submit(*s, Prompt(6, 3), p)})[0];
  EXPECT_EQ(cut.reason, FinishReason::kStop);
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
}

TEST_F(SchedulerTest, StopTokenIdsEndTheStream) {
  auto s = Make(1);
  const auto full = RunAll(*s, {Submit(*s, Prompt(6, 4), Greedy(20))})[0];
  SamplingParams p = Greedy(20);
  p.stop_token_ids = {full.tokens[5]};
  const auto cut = RunAll(*s, {Submit(*s, Prompt(6, 4), p)})[0];
  EXPECT_EQ(cut.reason, FinishReason::kStop);
  const auto first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[5]);
  EXPECT_EQ(cut.tokens, std::vector<int32_t>(full.tokens.begin(), first + 1));
}

TEST_F(SchedulerTest, SessionResumeEqualsOneRequestWithTheWholeConversation) {
  auto s = Make(2);
  ASSERT_TRUE(s->sessions().Create("chat").ok());
  const auto p1 = Prompt(7, 1), p2 = Prompt(5, 2), p3 = Prompt(3, 3);
  const auto t1 = RunAll(*s, {Submit(*s, p1, Greedy(6), "chat")})[0];
  const auto t2 = RunAll(*s, {Submit(*s, p2, Greedy(6), "chat")})[0];
  EXPECT_EQ(t2.usage.session_length, 7 + 6 + 5 + 6);

  std::vector<int32_t> whole = p1;
  whole.insert(whole.end(), t1.tokens.begin(), t1.tokens.end());
  whole.insert(whole.end(), p2.begin(), p2.end());
  const auto one_shot = RunAll(*s, {Submit(*s, whole, Greedy(6))})[0];
  EXPECT_EQ(t2.tokens, one_shot.tokens);

  // Export -> delete -> import -> continue gives the same tokens as continuing directly.
  const std::string blob = *s->sessions().Export("chat");
  const auto direct = RunAll(*s, {Submit(*s, p3, Greedy(6), "chat")})[0];
  ASSERT_TRUE(s->sessions().Delete("chat").ok());
  ASSERT_TRUE(s->sessions()
                  .Import("chat2", {reinterpret_cast<const uint8_t*>(blob.data()), blob.size()})
                  .ok());
  const auto resumed = RunAll(*s, {Submit(*s, p3, Greedy(6), "chat2")})[0];
  EXPECT_EQ(direct.tokens, resumed.tokens);
  EXPECT_EQ(resumed.usage.session_length, direct.usage.session_length);
}

TEST_F(SchedulerTest, FirstTurnCancelledBeforeItsFirstChunkLeavesTheSessionNew) {
  SchedulerOptions options;
  options.max_batch = 2;
  options.max_step_tokens = 2;
  auto s = Make(2, options);
  // Dirty both slots with other conversations.
  RunAll(*s, {Submit(*s, Prompt(9, 7), Greedy(4)), Submit(*s, Prompt(9, 8), Greedy(4))});
  ASSERT_TRUE(s->sessions().Create("chat").ok());

  // Decodes and a long prompt fill the step budget, so the turn is admitted (it holds a slot) but
  // is cancelled before any of its tokens ran.
  auto hog = Submit(*s, Prompt(40, 9), Greedy(1));
  auto first = Submit(*s, Prompt(6, 1), Greedy(5), "chat");
  s->StepForTest();
  first->Cancel();
  RunAll(*s, {hog, first});

  // The turn did not complete, so the session is as it was: new, no state, nothing pending.
  const std::string blob = *s->sessions().Export("chat");
  const auto decoded =
      DecodeSessionBlob({reinterpret_cast<const uint8_t*>(blob.data()), blob.size()});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->pending_tokens.empty());
  EXPECT_TRUE(decoded->state.empty());
  EXPECT_EQ(decoded->length, 0);

  // The next turn starts from an empty state, exactly as one request with its prompt alone.
  const auto p2 = Prompt(4, 2);
  const auto second = RunAll(*s, {Submit(*s, p2, Greedy(6), "chat")})[0];
  const auto one_shot = RunAll(*s, {Submit(*s, p2, Greedy(6))})[0];
  EXPECT_EQ(second.tokens, one_shot.tokens);
}

// A retried turn after a cancel (or a deadline) gives what the first attempt would have: the
// cancelled attempt left neither its prompt nor its tokens in the conversation.
TEST_F(SchedulerTest, ARetryAfterACancelledTurnEqualsTheTurnNeverCancelled) {
  auto s = Make(2);
  ASSERT_TRUE(s->sessions().Create("chat").ok());
  const auto p1 = Prompt(7, 1), p2 = Prompt(5, 2);
  const auto t1 = RunAll(*s, {Submit(*s, p1, Greedy(6), "chat")})[0];

  auto attempt = Submit(*s, p2, Greedy(40), "chat");
  for (int i = 0; i < 6; ++i) s->StepForTest();  // some tokens generated and streamed
  attempt->Cancel();
  const auto cancelled = RunAll(*s, {attempt})[0];
  EXPECT_EQ(cancelled.reason, FinishReason::kCancelled);
  EXPECT_FALSE(cancelled.tokens.empty());
  EXPECT_EQ(cancelled.usage.session_length, 7 + 6);
  EXPECT_EQ(s->sessions().Get("chat")->length, 7 + 6);

  const auto retry = RunAll(*s, {Submit(*s, p2, Greedy(6), "chat")})[0];
  std::vector<int32_t> whole = p1;
  whole.insert(whole.end(), t1.tokens.begin(), t1.tokens.end());
  whole.insert(whole.end(), p2.begin(), p2.end());
  const auto one_shot = RunAll(*s, {Submit(*s, whole, Greedy(6))})[0];
  EXPECT_EQ(retry.tokens, one_shot.tokens);
  EXPECT_EQ(retry.usage.session_length, 7 + 6 + 5 + 6);
}

TEST_F(SchedulerTest, AnEmptyPromptForASessionWithNothingPendingIsRefusedAtSubmit) {
  auto s = Make(2);
  ASSERT_TRUE(s->sessions().Create("new").ok());
  auto neighbour = Submit(*s, Prompt(4, 1), Greedy(5));
  GenerationRequest empty;
  empty.session_id = "new";
  empty.sampling = Greedy(3);
  empty.stream = std::make_shared<GenerationStream>(16);
  const absl::Status refused = s->Submit(std::move(empty));
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
  EXPECT_FALSE(s->sessions().Get("new")->busy);
  const auto r = RunAll(*s, {neighbour})[0];  // the step it would have joined is unharmed
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.tokens.size(), 5u);

  // After a completed turn the session continues from its last token: an empty prompt is fine.
  RunAll(*s, {Submit(*s, Prompt(3, 2), Greedy(2), "new")});
  const auto more = RunAll(*s, {Submit(*s, {}, Greedy(3), "new")})[0];
  EXPECT_TRUE(more.status.ok()) << more.status;
  EXPECT_EQ(more.tokens.size(), 3u);
}

// Decodes come first, and the prompts being read share the rest of the step: a short prompt
// arriving behind long ones gets its first token within a couple of steps, not after all of them.
TEST_F(SchedulerTest, AShortPromptIsNotStarvedBehindLongOnes) {
  SchedulerOptions options;
  options.max_batch = 8;
  options.max_step_tokens = 32;
  auto s = Make(8, options);
  std::vector<std::shared_ptr<GenerationStream>> longs;
  for (int i = 0; i < 4; ++i) longs.push_back(Submit(*s, Prompt(400, 10 + i), Greedy(2)));
  s->StepForTest();
  auto short_one = Submit(*s, Prompt(4, 1), Greedy(1));
  Result r;
  int steps = 0;
  while (!r.final && steps < 1000) {
    s->StepForTest();
    ++steps;
    Drain(*short_one, r);
  }
  EXPECT_TRUE(r.status.ok());
  EXPECT_LE(steps, 2) << "first-come-first-served prefill would take ~50 steps";
  // The long ones still finish, and the same as alone.
  const auto results = RunAll(*s, longs);
  const auto alone = RunAll(*s, {Submit(*s, Prompt(400, 10), Greedy(2))})[0];
  EXPECT_EQ(results[0].tokens, alone.tokens);
}

// Forwards to a real backend and records the StepOutput it is handed.
class OutputRecordingBackend : public Backend {
 public:
  explicit OutputRecordingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  BackendInfo info() const override { return inner_->info(); }
  absl::Status Forward(const Step& step, StepOutput* out) override {
    outputs.insert(out);
    capacity_before.push_back(out->logits.capacity());
    return inner_->Forward(step, out);
  }
  absl::Status ResetSlot(int slot) override { return inner_->ResetSlot(slot); }
  absl::Status ReadSlot(int slot, std::span<uint8_t> o) override {
    return inner_->ReadSlot(slot, o);
  }
  absl::Status WriteSlot(int slot, std::span<const uint8_t> in) override {
    return inner_->WriteSlot(slot, in);
  }

  std::set<StepOutput*> outputs;
  std::vector<size_t> capacity_before;

 private:
  std::unique_ptr<Backend> inner_;
};

// Forwards to a real backend whose ResetSlot fails with RESOURCE_EXHAUSTED (as CUDA reports an
// allocation failure).
class FailingResetBackend : public OutputRecordingBackend {
 public:
  using OutputRecordingBackend::OutputRecordingBackend;
  absl::Status ResetSlot(int) override {
    return absl::ResourceExhaustedError("device out of memory");
  }
};

// A backend failure while starting a session's turn ends that request with the reason; it is not
// mistaken for "no free slot" and retried later as a request without its session.
TEST_F(SchedulerTest, ABackendFailureStartingATurnEndsTheRequestAndFreesTheSession) {
  BackendOptions options;
  options.kind = BackendKind::kCpu;
  options.num_slots = 2;
  options.num_threads = 1;
  FailingResetBackend failing(std::move(*CreateBackend(*model_, options)));
  Scheduler s(&failing, tokenizer_, (*model_)->fingerprint, {});
  ASSERT_TRUE(s.sessions().Create("chat").ok());
  const auto r = RunAll(s, {Submit(s, Prompt(4, 1), Greedy(3), "chat")})[0];
  EXPECT_TRUE(absl::IsInternal(r.status)) << r.status;
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("reset a state slot"));
  EXPECT_TRUE(r.tokens.empty());
  const auto info = s.sessions().Get("chat");
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->busy);
  EXPECT_EQ(info->length, 0);
  EXPECT_EQ(s.sessions().Gauges().slots_running, 0);
}

// One StepOutput for the scheduler's life: its logits buffer is allocated once, not zero-filled
// (66 MB at batch 256 on Falcon-Mamba-7B's vocabulary) every step.
TEST_F(SchedulerTest, TheStepOutputIsReusedAcrossSteps) {
  BackendOptions options;
  options.kind = BackendKind::kCpu;
  options.num_slots = 4;
  options.num_threads = 1;
  OutputRecordingBackend recording(std::move(*CreateBackend(*model_, options)));
  Scheduler s(&recording, tokenizer_, (*model_)->fingerprint, {});
  SamplingParams sampled = Greedy(8);
  sampled.temperature = 0.7f;  // full logits rows, not token-only
  RunAll(s, {Submit(s, Prompt(5, 1), sampled), Submit(s, Prompt(5, 2), sampled)});
  EXPECT_EQ(recording.outputs.size(), 1u);
  ASSERT_GT(recording.capacity_before.size(), 2u);
  EXPECT_GE(recording.capacity_before.back(),
            2u * static_cast<size_t>((*model_)->config.vocab_size));
}

TEST_F(SchedulerTest, TokenIdsOutsideTheVocabularyAreRefusedAtSubmit) {
  auto s = Make(2);
  auto good = Submit(*s, Prompt(4, 1), Greedy(3));
  GenerationRequest bad;
  bad.prompt = {1, 2, 512};
  bad.sampling = Greedy(3);
  bad.stream = std::make_shared<GenerationStream>(16);
  const absl::Status refused = s->Submit(std::move(bad));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("token id 512"));
  EXPECT_EQ(RunAll(*s, {good})[0].tokens.size(), 3u);  // the batch it would have joined is unharmed
}

TEST_F(SchedulerTest, SecondRequestOnABusySessionAndUnknownSessionsAreRefusedAtSubmit) {
  auto s = Make(2);
  ASSERT_TRUE(s->sessions().Create("c").ok());
  auto first = Submit(*s, Prompt(3, 1), Greedy(50), "c");
  auto request = [](std::string session) {
    GenerationRequest r;
    r.prompt = Prompt(3, 2);
    r.sampling = Greedy(5);
    r.session_id = std::move(session);
    r.stream = std::make_shared<GenerationStream>(16);
    return r;
  };
  const absl::Status busy = s->Submit(request("c"));
  EXPECT_TRUE(absl::IsFailedPrecondition(busy)) << busy;
  const absl::Status unknown = s->Submit(request("nope"));
  EXPECT_TRUE(absl::IsNotFound(unknown)) << unknown;
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("does not exist"));
  EXPECT_TRUE(RunAll(*s, {first})[0].status.ok());
  EXPECT_TRUE(s->Submit(request("c")).ok());  // free again once the first ended
}

TEST_F(SchedulerTest, FullAdmissionQueueRefusesAtOnce) {
  SchedulerOptions options;
  options.max_queue = 2;
  auto s = Make(1, options);
  Submit(*s, Prompt(3, 1), Greedy(5));
  Submit(*s, Prompt(3, 1), Greedy(5));
  GenerationRequest r;
  r.prompt = Prompt(3, 1);
  r.stream = std::make_shared<GenerationStream>();
  absl::Status status = s->Submit(std::move(r));
  EXPECT_TRUE(absl::IsResourceExhausted(status));
  EXPECT_THAT(std::string(status.message()), HasSubstr("queue is full"));
}

}  // namespace
}  // namespace mambaserve
