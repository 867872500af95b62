// mambabench: a load generator for a mambaserve server (or an Engine in this process).
//
//   mambabench --target 127.0.0.1:50051 --concurrency 1,4,16,64,256 --prompt-tokens 128
//              --output-tokens 64 --out bench/results/mambabench.json
//   mambabench --target ... --rates 0.5,1,2 --requests 40          # Poisson arrivals
//   mambabench --target ... --multi-turn 8:6 --turn-tokens 64      # 8 conversations of 6 turns
//   mambabench --target ... --compare-in-process MODEL_DIR         # the server's overhead
//   mambabench --target ... --long-streams 1 --long-tokens 100000 --server-pid PID
//                                                     # flat over length: memory, time per token
//
// Per level: output tokens/s, requests/s, TTFT and inter-token latency p50/p90/p99, errors by
// code; JSON (with the latency samples) for bench/plot_mambabench.py.
#include <unistd.h>

#include <iostream>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/mambabench/long_streams.h"
#include "bench/mambabench/workload.h"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"
#include "server/cli/progress_bar.h"

namespace mambaserve::bench {
namespace {

struct Flags {
  std::string target = "127.0.0.1:50051", in_process, compare_in_process, concurrency = "1,4,16",
              rates, multi_turn, prompt_tokens = "128", output_tokens = "64",
              out = "bench/results/mambabench.json";
  int requests = 0, turn_tokens = 64, threads = 0, max_batch = 64, rounds = 1;
  uint64_t seed = 1;
  int long_streams = 0, server_pid = 0;
  int64_t long_tokens = 100000, sample_every = 1000;
  std::string label = "server";

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--target", target, "HOST:PORT of the server");
    app.add_option("--in-process", in_process,
                   "MODEL_DIR: run an Engine here instead of calling a server");
    app.add_option("--compare-in-process", compare_in_process,
                   "MODEL_DIR: also run every closed-loop level on an Engine here, and report "
                   "the server's throughput as a fraction of it");
    app.add_option("--rounds", rounds,
                   "with --compare-in-process: each level this many times, alternating in-process "
                   "and server; the best round of each is reported, and every round's ratio")
        ->check(CLI::Range(1, 100));
    app.add_option("--concurrency", concurrency, "closed-loop levels: streams in flight");
    app.add_option("--rates", rates, "Poisson levels, requests/s (replaces --concurrency)");
    app.add_option("--multi-turn", multi_turn,
                   "SESSIONS:TURNS: conversations with a session vs resending the history");
    app.add_option("--turn-tokens", turn_tokens, "new prompt tokens per turn (--multi-turn)")
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--requests", requests,
                   "requests per level (0: 4x the concurrency, at least 16)")
        ->check(CLI::Range(0, 1 << 24));
    app.add_option("--prompt-tokens", prompt_tokens, "N or MIN:MAX (uniform)");
    app.add_option("--output-tokens", output_tokens, "N or MIN:MAX (uniform)");
    app.add_option("--threads", threads, "in-process Engine threads (0: all cores)");
    app.add_option("--max-batch", max_batch, "in-process Engine's --max-batch")
        ->check(CLI::Range(1, 1 << 16));
    app.add_option("--seed", seed, "prompts, lengths and arrivals");
    app.add_option("--long-streams", long_streams,
                   "N: instead of levels, N streams of --long-tokens tokens each, sampled every "
                   "--sample-every tokens of the first (time per token, resident memory)")
        ->check(CLI::Range(0, 1024));
    app.add_option("--long-tokens", long_tokens,
                   "tokens per long stream (the server's "
                   "--max-tokens-limit must allow them)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
    app.add_option("--sample-every", sample_every, "tokens between long-stream samples")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
    app.add_option("--server-pid", server_pid,
                   "PID: the server's process on this machine, whose resident memory the long "
                   "streams sample (bench/mambabench_live.sh passes it)")
        ->check(CLI::Range(0, 1 << 30));
    app.add_option("--label", label, "names a long-stream run in its plot");
    app.add_option("--out", out, "FILE: the JSON result");
  }
};

absl::StatusOr<std::vector<double>> ParseList(const std::string& text) {
  std::vector<double> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v) || !(v > 0)) {
      return absl::InvalidArgumentError("\"" + text + "\" is not a list of positive numbers");
    }
    values.push_back(v);
  }
  return values;
}

Progress Bar(std::unique_ptr<ProgressBar>* bar, const std::string& label, int64_t total) {
  *bar = std::make_unique<ProgressBar>(label, total, "requests");
  ProgressBar* raw = bar->get();
  auto mu = std::make_shared<std::mutex>();
  return [raw, mu](int64_t done) {
    std::lock_guard<std::mutex> lock(*mu);
    raw->Update(done);
  };
}

void PrintLevel(const std::string& where, const LevelResult& r) {
  const nlohmann::json j = r.ToJson();
  std::cerr << where << " " << r.kind << " " << r.level << ": " << j["output_tokens_per_s"]
            << " tok/s, TTFT p50 " << j["ttft"]["p50_ms"] << " ms, ITL p50 "
            << j["inter_token"]["p50_ms"] << " ms, errors " << j["errors"].dump() << "\n";
}

absl::Status Run(const Flags& f) {
  absl::StatusOr<LengthSpec> prompt = LengthSpec::Parse(f.prompt_tokens);
  if (!prompt.ok()) return prompt.status();
  absl::StatusOr<LengthSpec> output = LengthSpec::Parse(f.output_tokens);
  if (!output.ok()) return output.status();
  absl::StatusOr<std::unique_ptr<Target>> target =
      f.in_process.empty() ? ConnectGrpcTarget(f.target)
                           : StartInProcessTarget(f.in_process, f.threads, f.max_batch);
  if (!target.ok()) return target.status();
  std::unique_ptr<Target> in_process;
  if (!f.compare_in_process.empty()) {
    absl::StatusOr<std::unique_ptr<Target>> engine =
        StartInProcessTarget(f.compare_in_process, f.threads, f.max_batch);
    if (!engine.ok()) return engine.status();
    in_process = *std::move(engine);
  }
  const int64_t vocab = (*target)->vocab_size();

  nlohmann::json result = {{"target", f.in_process.empty() ? f.target : "in-process"},
                           {"prompt_tokens", prompt->ToString()},
                           {"output_tokens", output->ToString()},
                           {"seed", f.seed}};
  std::unique_ptr<ProgressBar> bar;
  if (f.long_streams > 0) {
    LongStreamOptions o;
    o.streams = f.long_streams;
    o.tokens = f.long_tokens;
    o.sample_every = f.sample_every;
    o.memory_pid = f.in_process.empty() ? f.server_pid : static_cast<int>(::getpid());
    o.label = f.label;
    RequestMaker maker(vocab, *prompt, *output, f.seed);
    bar = std::make_unique<ProgressBar>("first stream", f.long_tokens, "tokens");
    nlohmann::json r = RunLongStreams(**target, maker, o, [&](int64_t done) { bar->Update(done); });
    bar->Finish();
    if (r.contains("error")) return absl::UnavailableError(r["error"].get<std::string>());
    std::cerr << "per-token drift " << r.value("per_token_drift", 0.0)
              << ", resident memory growth " << r.value("rss_growth", 0.0) << "\n";
    return WriteOutputFile(f.out, r.dump(1) + "\n");
  }
  if (!f.rates.empty()) {
    absl::StatusOr<std::vector<double>> rates = ParseList(f.rates);
    if (!rates.ok()) return rates.status();
    for (double rate : *rates) {
      const int n = f.requests > 0 ? f.requests : 32;
      RequestMaker maker(vocab, *prompt, *output, f.seed);
      LevelResult r = RunPoisson(**target, maker, rate, n, f.seed,
                                 Bar(&bar, absl::StrCat("poisson ", rate, "/s"), n));
      bar->Finish();
      PrintLevel("server", r);
      result["levels"].push_back(r.ToJson());
    }
  } else if (!f.concurrency.empty() && f.multi_turn.empty()) {
    absl::StatusOr<std::vector<double>> levels = ParseList(f.concurrency);
    if (!levels.ok()) return levels.status();
    for (double level : *levels) {
      const int concurrency = static_cast<int>(level);
      const int n = f.requests > 0 ? f.requests : std::max(16, 4 * concurrency);
      // The same prompts for both, in-process first: a server left idle uses no CPU. Rounds
      // alternate the two, so a noisy neighbour slows both alike; each round's ratio is kept.
      const int rounds = in_process ? f.rounds : 1;
      std::optional<LevelResult> best_server, best_in_process;
      nlohmann::json ratios = nlohmann::json::array();
      for (int round = 0; round < rounds; ++round) {
        const std::string of = rounds > 1 ? absl::StrCat(" (round ", round + 1, ")") : "";
        double engine = 0;
        if (in_process) {
          RequestMaker maker(vocab, *prompt, *output, f.seed);
          LevelResult r =
              RunClosedLoop(*in_process, maker, concurrency, n,
                            Bar(&bar, absl::StrCat("in-process x", concurrency, of), n));
          bar->Finish();
          PrintLevel("in-process", r);
          engine = r.output_tokens_per_s();
          if (!best_in_process || engine > best_in_process->output_tokens_per_s())
            best_in_process = std::move(r);
        }
        RequestMaker maker(vocab, *prompt, *output, f.seed);
        LevelResult r = RunClosedLoop(**target, maker, concurrency, n,
                                      Bar(&bar, absl::StrCat("streams x", concurrency, of), n));
        bar->Finish();
        PrintLevel("server", r);
        if (in_process) ratios.push_back(engine > 0 ? r.output_tokens_per_s() / engine : 0);
        if (!best_server || r.output_tokens_per_s() > best_server->output_tokens_per_s())
          best_server = std::move(r);
      }
      nlohmann::json measured = best_server->ToJson();
      if (in_process) {
        result["in_process_levels"].push_back(best_in_process->ToJson());
        const double engine = best_in_process->output_tokens_per_s();
        measured["fraction_of_in_process_throughput"] =
            engine > 0 ? best_server->output_tokens_per_s() / engine : 0;
        measured["fraction_of_in_process_by_round"] = ratios;
      }
      result["levels"].push_back(measured);
    }
  }
  if (!f.multi_turn.empty()) {
    std::vector<std::string> parts = absl::StrSplit(f.multi_turn, ':');
    int sessions = 0, turns = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &sessions) ||
        !absl::SimpleAtoi(parts[1], &turns) || sessions < 1 || turns < 1) {
      return absl::InvalidArgumentError("--multi-turn: expected SESSIONS:TURNS, e.g. 8:6");
    }
    for (bool resend : {false, true}) {
      RequestMaker maker(vocab, *prompt, *output, f.seed);
      nlohmann::json mode = RunMultiTurn(
          **target, maker, sessions, turns, f.turn_tokens, output->min, resend,
          Bar(&bar, resend ? "resend history" : "sessions", int64_t{sessions} * turns));
      bar->Finish();
      if (mode.contains("error"))
        return absl::FailedPreconditionError(mode["error"].get<std::string>());
      result["multi_turn"][resend ? "resend_history" : "session"] = mode;
    }
    for (const char* mode : {"session", "resend_history"}) {
      std::cerr << mode << " TTFT p50 by turn (ms):";
      for (const auto& t : result["multi_turn"][mode]["turns"])
        std::cerr << " " << t["ttft"]["p50_ms"];
      std::cerr << "\n";
    }
  }
  return WriteOutputFile(f.out, result.dump(1) + "\n");
}

}  // namespace
}  // namespace mambaserve::bench

int main(int argc, char** argv) {
  return mambaserve::RunSubcommand<mambaserve::bench::Flags>(
      "mambabench", "A load generator for a mambaserve server.", argc, argv,
      mambaserve::bench::Run);
}
