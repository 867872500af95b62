// mambabench's long-stream mode: the flat-over-length claim measured through a server. A few
// streams generate many tokens each; every `sample_every` tokens of the first one, the time per
// token over that window and the server's resident memory are recorded. A transformer server's KV
// cache would grow with every token; here both should stay flat.
#pragma once

#include <cstdint>
#include <string>

#include "bench/mambabench/targets.h"
#include "bench/mambabench/workload.h"
#include "nlohmann/json.hpp"

namespace mambaserve::bench {

struct LongStreamOptions {
  int streams = 1;
  int64_t tokens = 100000;  // per stream
  int64_t sample_every = 1000;
  // Whose resident memory is sampled (/proc/PID/status): the server's when it runs on this
  // machine, this process for an in-process target; 0: none (memory left out of the result).
  int memory_pid = 0;
  std::string label;  // names the run in the plot's legend
};

// The same JSON as flat_over_length_bench (samples of tokens, rss_bytes, ms_per_token; rss_growth
// and per_token_drift between the first and last tenth of them), so plot_flat_over_length.py
// draws both.
// A stream that fails ends the run with its error in "error".
nlohmann::json RunLongStreams(Target& target, RequestMaker& maker, const LongStreamOptions& options,
                              const Progress& progress);

}  // namespace mambaserve::bench
