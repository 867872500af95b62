#include "bench/mambabench/long_streams.h"

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/flat_over_length.h"

namespace mambaserve::bench {

nlohmann::json RunLongStreams(Target& target, RequestMaker& maker, const LongStreamOptions& o,
                              const Progress& progress) {
  using Clock = std::chrono::steady_clock;
  nlohmann::json samples = nlohmann::json::array();
  std::mutex mu;  // samples, written from the first stream's thread
  auto window_start = Clock::now();
  int64_t next_sample = o.sample_every;
  auto sample = [&](int64_t produced) {
    progress(produced);
    std::lock_guard<std::mutex> lock(mu);
    while (produced >= next_sample) {
      const auto now = Clock::now();
      const double seconds = std::chrono::duration<double>(now - window_start).count();
      window_start = now;
      nlohmann::json s = {{"tokens", next_sample},
                          {"ms_per_token", 1000 * seconds / static_cast<double>(o.sample_every)}};
      if (o.memory_pid > 0) s["rss_bytes"] = ResidentBytes(std::to_string(o.memory_pid));
      samples.push_back(std::move(s));
      next_sample += o.sample_every;
    }
  };

  std::vector<StreamResult> results(o.streams);
  std::vector<std::thread> threads;
  for (int i = 0; i < o.streams; ++i) {
    BenchRequest request = maker.Next();
    request.max_tokens = static_cast<int>(o.tokens);
    if (i == 0) request.on_tokens = sample;
    threads.emplace_back([&target, &results, i, request = std::move(request)] {
      results[i] = target.Generate(request);
    });
  }
  for (std::thread& t : threads) t.join();

  nlohmann::json out = {{"benchmark", "flat_over_length"},
                        {"preset", o.label},
                        {"streams", o.streams},
                        {"tokens_per_stream", o.tokens},
                        {"sample_every", o.sample_every},
                        {"samples", samples}};
  if (o.memory_pid > 0) out["rss_pid"] = o.memory_pid;
  for (const StreamResult& r : results) {
    if (r.code != 0) {
      out["error"] = absl::StrCat("code ", r.code, ": ", r.error);
      return out;
    }
  }
  AddFlatOverLengthSummary(out);
  return out;
}

}  // namespace mambaserve::bench
