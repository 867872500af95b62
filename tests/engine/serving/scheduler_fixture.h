// The scheduler test fixture: a tiny random model on the CPU backend, submitted requests driven
// step by step, and their streams drained into Results. Shared by the scheduler's test files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend_factory.h"
#include "engine/serving/scheduler.h"
#include "engine/testing/bpe_tokenizer_writer.h"
#include "engine/testing/random_model.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<std::string> pieces;  // text per event
  int events = 0;
  FinishReason reason = FinishReason::kNone;
  absl::Status status;
  GenerationUsage usage;
  bool final = false;
  // prompt_logprobs, concatenated; the prompt index of the first; events carrying them.
  std::vector<SampledToken> prompt_logprobs;
  int64_t prompt_logprobs_begin = -1;
  int last_prompt_logprobs_event = -1;  // event index (0-based)
  int first_token_event = -1;
};

// Drains what the stream holds so far into `r`.
inline void Drain(GenerationStream& stream, Result& r) {
  while (auto e = stream.Pop()) {
    if (!e->prompt_logprobs.empty()) {
      if (r.prompt_logprobs_begin < 0) r.prompt_logprobs_begin = e->prompt_logprobs_begin;
      // Each event continues where the previous one ended.
      EXPECT_EQ(e->prompt_logprobs_begin,
                r.prompt_logprobs_begin + static_cast<int64_t>(r.prompt_logprobs.size()));
      r.prompt_logprobs.insert(r.prompt_logprobs.end(), e->prompt_logprobs.begin(),
                               e->prompt_logprobs.end());
      r.last_prompt_logprobs_event = r.events;
    }
    if (!e->token_ids.empty() && r.first_token_event < 0) r.first_token_event = r.events;
    ++r.events;
    r.tokens.insert(r.tokens.end(), e->token_ids.begin(), e->token_ids.end());
    r.text += e->text;
    r.pieces.push_back(e->text);
    if (e->final) {
      r.final = true;
      r.reason = e->finish_reason;
      r.status = e->status;
      r.usage = e->usage;
    }
  }
}

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ModelConfig config = *PresetConfig("tiny", ModelType::kMamba);
    config.eos_token_id = -1;  // random weights: keep streams from ending early on eos
    ASSERT_TRUE(WriteRandomModel(config, DType::kF32, 5, dir_->path()).ok());
    model_ = new std::shared_ptr<const Model>(*LoadModel(dir_->path()));
    tokenizer_ = Tokenizer::FromJson(*TrainByteLevelBpeJson(512))->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
    delete dir_;
  }

  std::unique_ptr<Scheduler> Make(int slots, SchedulerOptions options = {}) {
    BackendOptions backend_options;
    backend_options.kind = BackendKind::kCpu;
    backend_options.num_slots = slots;
    backend_options.num_threads = 1;
    backends_.push_back(std::move(*CreateBackend(*model_, backend_options)));
    return std::make_unique<Scheduler>(backends_.back().get(), tokenizer_, (*model_)->fingerprint,
                                       options);
  }

  static std::shared_ptr<GenerationStream> Submit(Scheduler& s, std::vector<int32_t> prompt,
                                                  SamplingParams params, std::string session = "",
                                                  int capacity = 1 << 20) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.sampling = std::move(params);
    r.session_id = std::move(session);
    r.stream = std::make_shared<GenerationStream>(capacity);
    auto stream = r.stream;
    EXPECT_TRUE(s.Submit(std::move(r)).ok());
    return stream;
  }

  // Steps until every stream has its final event (bounded).
  static std::vector<Result> RunAll(Scheduler& s,
                                    const std::vector<std::shared_ptr<GenerationStream>>& streams) {
    std::vector<Result> results(streams.size());
    for (int step = 0; step < 10000; ++step) {
      s.StepForTest();
      bool all = true;
      for (size_t i = 0; i < streams.size(); ++i) {
        Drain(*streams[i], results[i]);
        all = all && results[i].final;
      }
      if (all) return results;
    }
    ADD_FAILURE() << "streams did not finish";
    return results;
  }

  static std::vector<int32_t> Prompt(int n, int seed) {
    std::vector<int32_t> p(n);
    for (int i = 0; i < n; ++i) p[i] = 1 + (seed * 131 + i * 17) % 500;
    return p;
  }

  static SamplingParams Greedy(int max_tokens) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = max_tokens;
    return p;
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline std::shared_ptr<const Model>* model_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  std::vector<std::unique_ptr<Backend>> backends_;
};

}  // namespace mambaserve
