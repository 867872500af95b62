// mambaserve perplexity: how well a model predicts a text, scored through the engine exactly as a
// client's prompt_logprobs request is (scoring-only requests, batched by the scheduler): tokens,
// mean negative log-likelihood per token and perplexity.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/engine.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"
#include "server/cli/progress_bar.h"

namespace mambaserve {
namespace {

struct PerplexityFlags {
  std::string dir, text_file, json_path, backend = "auto", weight_dtype;
  std::vector<int32_t> tokens;
  int64_t context = 0;
  int threads = 0, parallel = 8;
  bool per_token = false;

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--model", dir, "DIR: the checkpoint")->required();
    CLI::Option* text = app.add_option("--text-file", text_file, "F: the text to score");
    app.add_option("--tokens", tokens, "5,17,42: token ids to score instead of a text")
        ->delimiter(',')
        ->check(CLI::NonNegativeNumber)
        ->excludes(text);
    app.add_option("--context", context,
                   "N: score windows of N tokens, each from a fresh state (its first token "
                   "unscored); 0: the whole text as one stream")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
    app.add_option("--json", json_path, "OUT: also write the figures as JSON (- for stdout)");
    app.add_flag("--per-token", per_token, "with --json: every scored token's log-probability");
    app.add_option("--parallel", parallel, "windows scored at once (batched)")
        ->check(CLI::Range(1, 1024));
    app.add_option("--backend", backend, "auto: the CUDA module when a GPU is there")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
    app.add_option("--weight-dtype", weight_dtype, "weights as held in memory (default: as stored)")
        ->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--threads", threads, "CPU backend threads (0: all cores)")
        ->check(CLI::Range(0, 4096));
  }
};

struct Window {
  size_t begin = 0, size = 0;
};

// Non-overlapping windows of `context` tokens (0: one window of everything). A window's first token
// has no context and is not scored, so a last window of a single token is dropped.
std::vector<Window> MakeWindows(size_t tokens, int64_t context) {
  const size_t step = context > 0 ? static_cast<size_t>(context) : std::max<size_t>(tokens, 1);
  std::vector<Window> windows;
  for (size_t begin = 0; begin + 1 < tokens; begin += step)
    windows.push_back({begin, std::min(step, tokens - begin)});
  return windows;
}

struct WindowScore {
  double nll = 0;  // summed in the window's token order: the total does not depend on timing
  int64_t scored = 0;
  std::vector<float> logprobs;  // with --per-token
  bool done = false;
};

absl::StatusOr<std::vector<int32_t>> TokensToScore(const PerplexityFlags& flags,
                                                   const Engine& engine) {
  if (flags.text_file.empty()) {
    if (flags.tokens.empty()) return absl::InvalidArgumentError("give --text-file or --tokens");
    for (int32_t t : flags.tokens) {
      if (t >= engine.info().config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " >= vocab size ", engine.info().config.vocab_size));
      }
    }
    return flags.tokens;
  }
  if (engine.tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(flags.dir, " has no tokenizer.json: score token ids with --tokens"));
  }
  ASSIGN_OR_RETURN(const std::string text, ReadTextFile(flags.text_file));
  absl::StatusOr<std::vector<int32_t>> ids = engine.tokenizer()->Encode(text);
  if (!ids.ok()) {
    return absl::Status(ids.status().code(),
                        absl::StrCat(flags.text_file, ": ", ids.status().message()));
  }
  return ids;
}

// Scores every window through `engine`, `parallel` at a time.
absl::StatusOr<std::vector<WindowScore>> ScoreWindows(Engine& engine,
                                                      const std::vector<int32_t>& tokens,
                                                      const std::vector<Window>& windows,
                                                      int parallel, bool per_token) {
  std::vector<WindowScore> scores(windows.size());
  std::vector<std::shared_ptr<GenerationStream>> streams(windows.size());
  std::mutex mu;
  std::condition_variable wake;
  int64_t signals = 0;  // events pushed to any stream; guarded by mu
  int64_t total_scored = 0;
  for (const Window& w : windows) total_scored += static_cast<int64_t>(w.size) - 1;
  ProgressBar progress("scoring", total_scored, "tokens");
  int64_t scored = 0;
  size_t next = 0, first_open = 0;
  int in_flight = 0;
  absl::Status failed;
  while (first_open < windows.size() && failed.ok()) {
    for (; in_flight < parallel && next < windows.size(); ++next, ++in_flight) {
      const Window& w = windows[next];
      GenerationRequest request;
      request.prompt.assign(tokens.begin() + static_cast<ptrdiff_t>(w.begin),
                            tokens.begin() + static_cast<ptrdiff_t>(w.begin + w.size));
      request.sampling.max_tokens = 0;
      request.sampling.prompt_logprobs = 0;
      request.stream = std::make_shared<GenerationStream>();
      request.stream->SetListener([&] {
        std::lock_guard<std::mutex> lock(mu);
        ++signals;
        wake.notify_one();
      });
      streams[next] = request.stream;
      if (absl::Status submitted = engine.Submit(std::move(request)); !submitted.ok()) {
        // Not a return: the listeners of the windows already submitted refer to this frame and
        // are cleared below.
        streams[next]->SetListener(nullptr);
        failed = submitted;
        break;
      }
    }
    int64_t seen;
    {
      std::lock_guard<std::mutex> lock(mu);
      seen = signals;
    }
    for (size_t i = first_open; i < next; ++i) {
      WindowScore& score = scores[i];
      while (!score.done) {
        std::optional<GenerationEvent> event = streams[i]->Pop();
        if (!event) break;
        if (!event->prompt_logprobs.empty() && event->prompt_logprobs_begin != score.scored + 1) {
          failed = absl::InternalError(absl::StrCat("window ", i, ": prompt logprobs from token ",
                                                    event->prompt_logprobs_begin, ", expected ",
                                                    score.scored + 1));
        }
        for (const SampledToken& t : event->prompt_logprobs) {
          score.nll -= static_cast<double>(t.logprob);
          if (per_token) score.logprobs.push_back(t.logprob);
        }
        score.scored += static_cast<int64_t>(event->prompt_logprobs.size());
        scored += static_cast<int64_t>(event->prompt_logprobs.size());
        if (event->final) {
          score.done = true;
          --in_flight;
          streams[i]->SetListener(nullptr);
          if (!event->status.ok()) {
            failed = absl::Status(event->status.code(),
                                  absl::StrCat("window ", i, ": ", event->status.message()));
          } else if (score.scored != static_cast<int64_t>(windows[i].size) - 1) {
            failed = absl::InternalError(absl::StrCat("window ", i, ": ", score.scored,
                                                      " tokens scored of ", windows[i].size - 1));
          }
        }
      }
    }
    while (first_open < next && scores[first_open].done) ++first_open;
    progress.Update(scored);
    if (first_open < windows.size() && failed.ok()) {
      std::unique_lock<std::mutex> lock(mu);
      wake.wait_for(lock, std::chrono::milliseconds(100), [&] { return signals != seen; });
    }
  }
  for (size_t i = first_open; i < next; ++i) {
    if (!scores[i].done) streams[i]->Cancel();
    streams[i]->SetListener(nullptr);
  }
  RETURN_IF_ERROR(failed);
  progress.Finish();
  return scores;
}

absl::Status Perplexity(const PerplexityFlags& flags) {
  EngineOptions options;
  options.model_dir = flags.dir;
  ASSIGN_OR_RETURN(options.backend.kind, ParseBackendKind(flags.backend));
  options.backend.num_threads = flags.threads;
  options.backend.num_slots = flags.parallel;
  options.scheduler.max_batch = flags.parallel;
  if (!flags.weight_dtype.empty()) {
    ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(flags.weight_dtype));
    options.backend.weight_dtype = dtype;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(options));
  if (!engine->info().backend_fallback_reason.empty()) {
    std::cerr << "perplexity: using the CPU backend: " << engine->info().backend_fallback_reason
              << "\n";
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, TokensToScore(flags, *engine));
  const std::vector<Window> windows = MakeWindows(tokens.size(), flags.context);
  if (windows.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the text has ", tokens.size(), " tokens; scoring needs at least 2"));
  }
  const auto started = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::vector<WindowScore> scores,
                   ScoreWindows(*engine, tokens, windows, flags.parallel, flags.per_token));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  double nll = 0;
  int64_t scored = 0;
  for (const WindowScore& s : scores) {
    nll += s.nll;
    scored += s.scored;
  }
  const double mean = nll / static_cast<double>(scored);
  std::cout << absl::StrFormat(
      "%d tokens in %d windows (context %s), %d scored: mean NLL %.6f nats/token, perplexity "
      "%.4f (%.1f s, %.0f tokens/s)\n",
      tokens.size(), windows.size(), flags.context > 0 ? absl::StrCat(flags.context) : "whole",
      scored, mean, std::exp(mean), seconds, static_cast<double>(scored) / seconds);
  if (flags.json_path.empty()) return absl::OkStatus();
  nlohmann::json out;
  out["model"] = flags.dir;
  if (!flags.text_file.empty()) out["text_file"] = flags.text_file;
  out["backend"] = engine->info().backend.name;
  out["weight_dtype"] = DTypeName(engine->info().backend.weight_dtype);
  out["tokens"] = tokens.size();
  out["context"] = flags.context;
  out["windows"] = windows.size();
  out["scored_tokens"] = scored;
  out["nll_sum"] = nll;
  out["mean_nll"] = mean;
  out["perplexity"] = std::exp(mean);
  out["seconds"] = seconds;
  out["tokens_per_second"] = static_cast<double>(scored) / seconds;
  if (flags.per_token) {
    nlohmann::json& per_window = out["token_logprobs"] = nlohmann::json::array();
    for (const WindowScore& s : scores) per_window.push_back(s.logprobs);
  }
  return WriteOutputFile(flags.json_path, out.dump() + "\n");
}

}  // namespace

int RunPerplexityCommand(int argc, char** argv) {
  return RunSubcommand<PerplexityFlags>(
      "perplexity",
      "Scores a text (or token ids) through the engine: tokens, mean negative log-likelihood per "
      "token and perplexity.",
      argc, argv, Perplexity);
}

}  // namespace mambaserve
