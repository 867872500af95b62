#include "bench/mambabench/long_streams.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/flat_over_length.h"

namespace mambaserve::bench {

nlohmann::json RunLongStreams(Target& target, RequestMaker& maker, const LongStreamOptions& o,
                              const Progress& progress) {
  // Only the first stream's thread observes; its samples are read after the threads are joined.
  WindowSampler sampler(o.sample_every, o.memory_pid > 0 ? std::to_string(o.memory_pid) : "");
  auto sample = [&](int64_t produced) {
    progress(produced);
    sampler.Observe(produced);
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
                        {"samples", sampler.samples()}};
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
