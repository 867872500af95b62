// mambabench's workloads over a Target: closed-loop levels (N streams always in flight), Poisson
// arrivals at a request rate, and multi-turn conversations (with a session vs resending the whole
// history); and what each level reports.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench/mambabench/targets.h"
#include "nlohmann/json.hpp"

namespace mambaserve::bench {

// A length: fixed ("128") or uniform in a range ("64:256").
struct LengthSpec {
  int min = 0, max = 0;
  static absl::StatusOr<LengthSpec> Parse(const std::string& text);
  std::string ToString() const;
};

// Random prompts (token ids in [1, vocab)) and output lengths, reproducible from the seed.
class RequestMaker {
 public:
  RequestMaker(int64_t vocab, LengthSpec prompt, LengthSpec output, uint64_t seed)
      : vocab_(vocab), prompt_(prompt), output_(output), random_(seed) {}
  BenchRequest Next();
  std::vector<int32_t> Tokens(int n);

 private:
  const int64_t vocab_;
  const LengthSpec prompt_, output_;
  std::mutex mu_;
  std::mt19937_64 random_;
};

// Percentiles and the mean of a sample (empty: all zero).
nlohmann::json Distribution(std::vector<double> seconds);

// What one level measured.
struct LevelResult {
  std::string kind;  // "closed_loop" or "poisson"
  double level = 0;  // streams in flight, or requests per second offered
  double seconds = 0;
  int64_t ok = 0, output_tokens = 0;
  std::map<std::string, int64_t> errors;  // by gRPC code name, with the first message
  std::vector<double> ttft, itl, e2e;

  void Add(const StreamResult& r);
  double output_tokens_per_s() const { return seconds > 0 ? output_tokens / seconds : 0; }
  nlohmann::json ToJson() const;
};

// Progress: called with the number of requests finished so far.
using Progress = std::function<void(int64_t)>;

// `concurrency` streams in flight until `requests` have been sent.
LevelResult RunClosedLoop(Target& target, RequestMaker& maker, int concurrency, int requests,
                          const Progress& progress);
// `requests` arrivals at exponential intervals averaging 1 / `rate` s, each on its own thread.
LevelResult RunPoisson(Target& target, RequestMaker& maker, double rate, int requests,
                       uint64_t seed, const Progress& progress);

// `sessions` conversations of `turns` turns (`turn_tokens` new prompt tokens each, `output_tokens`
// generated), run one turn of every conversation at a time: with `resend`, every turn sends the
// whole history without a session; otherwise each conversation is a session and sends only the
// new turn. Per turn index: TTFT distribution and the history length.
nlohmann::json RunMultiTurn(Target& target, RequestMaker& maker, int sessions, int turns,
                            int turn_tokens, int output_tokens, bool resend,
                            const Progress& progress);

}  // namespace mambaserve::bench
