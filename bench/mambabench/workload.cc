#include "bench/mambabench/workload.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <numeric>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mambaserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Records finished streams into a level from any thread, and reports progress.
class Collector {
 public:
  Collector(LevelResult* result, const Progress& progress) : result_(result), progress_(progress) {}
  void Add(const StreamResult& r) {
    int64_t finished = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      result_->Add(r);
      finished = ++finished_;
    }
    progress_(finished);
  }

 private:
  LevelResult* const result_;
  const Progress& progress_;
  std::mutex mu_;
  int64_t finished_ = 0;
};

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = q * static_cast<double>(sorted.size() - 1);
  const size_t low = static_cast<size_t>(rank);
  const size_t high = std::min(low + 1, sorted.size() - 1);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - static_cast<double>(low));
}

}  // namespace

absl::StatusOr<LengthSpec> LengthSpec::Parse(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  LengthSpec spec;
  if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &spec.min) ||
      (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &spec.max))) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not N or MIN:MAX"));
  }
  if (parts.size() == 1) spec.max = spec.min;
  if (spec.min < 1 || spec.max < spec.min) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": need 1 <= MIN <= MAX"));
  }
  return spec;
}

std::string LengthSpec::ToString() const {
  return min == max ? std::to_string(min) : absl::StrCat(min, ":", max);
}

std::vector<int32_t> RequestMaker::Tokens(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  std::uniform_int_distribution<int64_t> id(1, std::max<int64_t>(1, vocab_ - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = static_cast<int32_t>(id(random_));
  return tokens;
}

BenchRequest RequestMaker::Next() {
  int prompt_length = 0;
  BenchRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    prompt_length = std::uniform_int_distribution<int>(prompt_.min, prompt_.max)(random_);
    request.max_tokens = std::uniform_int_distribution<int>(output_.min, output_.max)(random_);
  }
  request.prompt = Tokens(prompt_length);
  return request;
}

nlohmann::json Distribution(std::vector<double> seconds) {
  std::sort(seconds.begin(), seconds.end());
  const double mean = seconds.empty() ? 0
                                      : std::accumulate(seconds.begin(), seconds.end(), 0.0) /
                                            static_cast<double>(seconds.size());
  return {{"p50_ms", 1000 * Percentile(seconds, 0.5)},
          {"p90_ms", 1000 * Percentile(seconds, 0.9)},
          {"p99_ms", 1000 * Percentile(seconds, 0.99)},
          {"mean_ms", 1000 * mean},
          {"samples", seconds.size()}};
}

void LevelResult::Add(const StreamResult& r) {
  if (r.code != 0) {
    ++errors[absl::StatusCodeToString(static_cast<absl::StatusCode>(r.code))];
    return;
  }
  ++ok;
  output_tokens += static_cast<int64_t>(r.tokens.size());
  if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
  itl.insert(itl.end(), r.inter_token_s.begin(), r.inter_token_s.end());
  e2e.push_back(r.e2e_s);
}

nlohmann::json LevelResult::ToJson() const {
  // Latency samples are kept (as milliseconds, sorted) so the CDF plots need no second run.
  auto samples = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    for (double& x : v) x = std::round(x * 1e6) / 1e3;
    return v;
  };
  return {{"kind", kind},
          {"level", level},
          {"seconds", seconds},
          {"requests_ok", ok},
          {"requests_per_s", seconds > 0 ? static_cast<double>(ok) / seconds : 0},
          {"output_tokens", output_tokens},
          {"output_tokens_per_s", output_tokens_per_s()},
          {"errors", errors},
          {"ttft", Distribution(ttft)},
          {"inter_token", Distribution(itl)},
          {"e2e", Distribution(e2e)},
          {"ttft_samples_ms", samples(ttft)},
          {"inter_token_samples_ms", samples(itl)}};
}

LevelResult RunClosedLoop(Target& target, RequestMaker& maker, int concurrency, int requests,
                          const Progress& progress) {
  LevelResult result;
  result.kind = "closed_loop";
  result.level = concurrency;
  std::atomic<int> next{0};
  Collector collector(&result, progress);
  const auto start = Clock::now();
  std::vector<std::thread> streams;
  for (int s = 0; s < concurrency; ++s) {
    streams.emplace_back([&] {
      while (next.fetch_add(1) < requests) collector.Add(target.Generate(maker.Next()));
    });
  }
  for (std::thread& t : streams) t.join();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

LevelResult RunPoisson(Target& target, RequestMaker& maker, double rate, int requests,
                       uint64_t seed, const Progress& progress) {
  LevelResult result;
  result.kind = "poisson";
  result.level = rate;
  std::mt19937_64 random(seed);
  std::exponential_distribution<double> interval(rate);
  Collector collector(&result, progress);
  const auto start = Clock::now();
  auto due = start;
  std::vector<std::thread> streams;
  for (int i = 0; i < requests; ++i) {
    due += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(interval(random)));
    std::this_thread::sleep_until(due);
    streams.emplace_back([&, request = maker.Next()] { collector.Add(target.Generate(request)); });
  }
  for (std::thread& t : streams) t.join();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

nlohmann::json RunMultiTurn(Target& target, RequestMaker& maker, int sessions, int turns,
                            int turn_tokens, int output_tokens, bool resend,
                            const Progress& progress) {
  struct Conversation {
    std::string id;
    std::vector<int32_t> history;
  };
  std::vector<Conversation> conversations(static_cast<size_t>(sessions));
  static std::atomic<int> run{0};
  const int this_run = run.fetch_add(1);
  for (int s = 0; s < sessions; ++s) {
    conversations[s].id = absl::StrCat("mambabench-", getpid(), "-", this_run, "-", s);
    if (!resend) {
      if (absl::Status created = target.CreateSession(conversations[s].id); !created.ok()) {
        return {{"error", std::string(created.message())}};
      }
    }
  }
  nlohmann::json per_turn = nlohmann::json::array();
  int64_t finished = 0;
  for (int t = 0; t < turns; ++t) {
    LevelResult turn_result;
    std::vector<std::thread> streams;
    std::mutex mu;
    int64_t history_tokens = 0;
    for (Conversation& c : conversations) {
      const std::vector<int32_t> turn = maker.Tokens(turn_tokens);
      c.history.insert(c.history.end(), turn.begin(), turn.end());
      history_tokens += static_cast<int64_t>(c.history.size());
      BenchRequest request;
      request.max_tokens = output_tokens;
      if (resend) {
        request.prompt = c.history;
      } else {
        request.prompt = turn;
        request.session_id = c.id;
      }
      streams.emplace_back([&target, &mu, &turn_result, conversation = &c,
                            request = std::move(request)] {
        StreamResult r = target.Generate(request);
        std::lock_guard<std::mutex> lock(mu);
        conversation->history.insert(conversation->history.end(), r.tokens.begin(), r.tokens.end());
        turn_result.Add(r);
      });
    }
    for (std::thread& s : streams) s.join();
    finished += sessions;
    progress(finished);
    per_turn.push_back({{"turn", t + 1},
                        {"history_tokens_mean", history_tokens / sessions},
                        {"ttft", Distribution(turn_result.ttft)},
                        {"errors", turn_result.errors}});
  }
  if (!resend) {
    for (Conversation& c : conversations) target.DeleteSession(c.id).IgnoreError();
  }
  return {{"mode", resend ? "resend_history" : "session"}, {"turns", per_turn}};
}

}  // namespace mambaserve::bench
