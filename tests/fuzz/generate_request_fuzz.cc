// Fuzz target for what a Generate call's bytes go through before the engine sees them: protobuf
// parsing, field validation and prompt tokenization (server/proto_convert), against a real engine
// on a tiny model with a byte-level BPE tokenizer. Properties: nothing crashes or reads out of
// bounds; a request that is accepted has a prompt within the limit, every id inside the vocabulary
// and sampling parameters inside the server's limits.
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/testing/bpe_tokenizer_writer.h"
#include "engine/testing/random_model.h"
#include "google/protobuf/stubs/logging.h"
#include "mambaserve/v1/mambaserve.pb.h"
#include "server/proto_convert.h"

namespace {

mambaserve::Engine* g_engine = nullptr;

mambaserve::ServiceLimits Limits() {
  mambaserve::ServiceLimits limits;
  limits.max_prompt_tokens = 256;
  limits.default_max_tokens = 16;
  return limits;
}
const mambaserve::ServiceLimits kLimits = Limits();

void Die(const absl::Status& status) {
  std::cerr << "fuzz set-up failed: " << status << "\n";
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // a line per invalid-UTF-8 string would drown the run
  char dir_template[] = "/tmp/mambaserve-fuzz-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  auto config = mambaserve::PresetConfig("tiny", mambaserve::ModelType::kMamba);
  if (!config.ok()) Die(config.status());
  if (auto s = mambaserve::WriteRandomModel(*config, mambaserve::DType::kF32, 7, dir); !s.ok()) {
    Die(s);
  }
  auto tokenizer = mambaserve::TrainByteLevelBpeJson(static_cast<int>(config->vocab_size));
  if (!tokenizer.ok()) Die(tokenizer.status());
  std::ofstream(dir + "/tokenizer.json") << *tokenizer;
  mambaserve::EngineOptions options;
  options.model_dir = dir;
  options.max_prompt_tokens = kLimits.max_prompt_tokens;
  auto engine = mambaserve::Engine::Create(std::move(options));
  if (!engine.ok()) Die(engine.status());
  g_engine = engine->release();  // lives as long as the process
  std::filesystem::remove_all(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mambaserve::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto accepted = mambaserve::ToGenerationRequest(request, "", *g_engine, kLimits);
  if (!accepted.ok()) return 0;
  const int64_t vocab = g_engine->info().config.vocab_size;
  if (accepted->prompt.empty() ||
      accepted->prompt.size() > static_cast<size_t>(kLimits.max_prompt_tokens)) {
    std::abort();
  }
  for (int32_t id : accepted->prompt) {
    if (id < 0 || id >= vocab) std::abort();
  }
  const mambaserve::SamplingParams& s = accepted->sampling;
  // max_tokens 0 is a scoring-only request: valid only with prompt_logprobs.
  const int32_t min_tokens = s.prompt_logprobs ? 0 : 1;
  if (s.max_tokens < min_tokens || s.max_tokens > kLimits.sampling.max_tokens || s.logprobs < 0 ||
      s.logprobs > kLimits.sampling.max_logprobs ||
      (s.prompt_logprobs &&
       (*s.prompt_logprobs < 0 || *s.prompt_logprobs > kLimits.sampling.max_logprobs)) ||
      s.stop.size() > static_cast<size_t>(kLimits.sampling.max_stop_strings)) {
    std::abort();
  }
  return 0;
}
