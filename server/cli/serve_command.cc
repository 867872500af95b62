// mambaserve serve: the gRPC server. Every flag is declared once, in the table below, with its
// help text, its bounds and where its value goes; the usage text and the parser both come from it.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"
#include "server/cli/command_line.h"
#include "server/cli/commands.h"
#include "server/cli/model_tokenizer.h"
#include "server/server.h"

namespace mambaserve {
namespace {

struct Flag {
  std::string name;
  std::string help;  // "(default X)" is appended from the value before parsing
  std::function<absl::Status(const std::string&)> set;
  std::function<std::string()> current;  // empty: no default shown
};

// An integer flag stored into `*target`, refused outside [min, max] (so nothing is truncated).
template <typename T>
Flag IntFlag(std::string name, std::string help, T* target, int64_t min, int64_t max) {
  return {name, std::move(help),
          [name, target, min, max](const std::string& text) -> absl::Status {
            int64_t v = 0;
            if (!absl::SimpleAtoi(text, &v) || v < min || v > max) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "--", name, " must be an integer in [", min, ", ", max, "], not \"", text, "\""));
            }
            *target = static_cast<T>(v);
            return absl::OkStatus();
          },
          [target] { return absl::StrCat(*target); }};
}

Flag StringFlag(std::string name, std::string help, std::string* target, bool show_default = true) {
  std::function<std::string()> current;
  if (show_default) current = [target] { return *target; };
  return {std::move(name), std::move(help),
          [target](const std::string& text) {
            *target = text;
            return absl::OkStatus();
          },
          std::move(current)};
}

struct ServeFlags {
  ServeOptions o;
  std::string model, model_cache = DefaultModelCacheDir(), backend = "auto", weight_dtype = "auto";
  int64_t ttl_s = 3600, host_budget_mb = 1024, stalled_reader_s = 120;
  int max_tokens_limit = 4096;
  std::vector<Flag> table;

  ServeFlags() {
    constexpr int64_t kIntMax = INT_MAX;
    EngineOptions& e = o.engine;
    e.backend.num_slots = 128;
    e.scheduler.sessions.max_sessions = 65536;
    table = {
        StringFlag("model",
                   "DIR: Hugging Face checkpoint dir (config.json, *.safetensors, tokenizer.json); "
                   "without it, the embedded tiny default model, generated once into --model-cache",
                   &model, false),
        StringFlag("model-cache", "DIR: where the default model is written", &model_cache),
        StringFlag("listen", "HOST:PORT for gRPC (port 0: pick a free one)", &o.listen),
        StringFlag("port-file", "FILE: write the bound port here once listening", &o.port_file,
                   false),
        {"log-level", "info|warning|error: the least severe log lines written to stderr",
         [](const std::string& text) {
           static const std::map<std::string, LogLevel> kLevels = {{"info", LogLevel::kInfo},
                                                                   {"warning", LogLevel::kWarning},
                                                                   {"error", LogLevel::kError}};
           auto it = kLevels.find(text);
           if (it == kLevels.end()) {
             return absl::InvalidArgumentError(
                 absl::StrCat("--log-level must be info, warning or error, not \"", text, "\""));
           }
           SetMinLogLevel(it->second);
           return absl::OkStatus();
         },
         [] { return std::string("info"); }},
        StringFlag("backend", "auto|cpu|cuda: auto uses the CUDA module when a GPU is there",
                   &backend),
        StringFlag("weight-dtype",
                   "auto|f32|bf16: weights as held in memory (auto: bf16 stays bf16)",
                   &weight_dtype),
        IntFlag("threads", "N: CPU backend threads (0: all cores)", &e.backend.num_threads, 0,
                4096),
        {"gpu-memory-fraction",
         "F in (0, 1]: CUDA share of device memory for weights + state slots",
         [&e](const std::string& text) {
           double v = 0;
           if (!absl::SimpleAtod(text, &v) || !(v > 0.0 && v <= 1.0)) {
             return absl::InvalidArgumentError("--gpu-memory-fraction must be in (0, 1]");
           }
           e.backend.gpu_memory_fraction = v;
           return absl::OkStatus();
         },
         [&e] { return absl::StrCat(e.backend.gpu_memory_fraction); }},
        IntFlag("gpu-device", "N: CUDA device index", &e.backend.gpu_device, 0, 1024),
        IntFlag(
            "max-sessions",
            "N: state slots (running sequences + resident sessions); must fit in memory, and on "
            "CUDA is clamped to what fits the device",
            &e.backend.num_slots, 1, kIntMax),
        IntFlag("max-batch", "N: sequences decoded together per step", &e.scheduler.max_batch, 1,
                kIntMax),
        IntFlag("max-queue", "N: accepted requests waiting for a slot; beyond, RESOURCE_EXHAUSTED",
                &e.scheduler.max_queue, 0, 1 << 24),
        IntFlag("max-step-tokens",
                "N: tokens per forward step (decodes first, prompts share the rest)",
                &e.scheduler.max_step_tokens, 1, 1 << 20),
        IntFlag("max-prompt-tokens", "N: longest prompt accepted", &o.limits.max_prompt_tokens, 1,
                1 << 20),
        IntFlag("max-tokens-limit", "N: largest max_tokens a request may ask for",
                &max_tokens_limit, 1, 1 << 24),
        IntFlag("default-max-tokens", "N: max_tokens when a request leaves it unset",
                &o.limits.default_max_tokens, 1, 1 << 24),
        IntFlag("session-ttl-s", "N: idle sessions expire after this (0: never)", &ttl_s, 0,
                int64_t{10} * 365 * 86400),
        IntFlag("max-named-sessions",
                "N: sessions that may exist at once; beyond, CreateSession/ImportSession answer "
                "RESOURCE_EXHAUSTED",
                &e.scheduler.sessions.max_sessions, 1, int64_t{1} << 30),
        IntFlag("host-state-budget-mb",
                "N: host memory for parked session states; oldest evicted beyond", &host_budget_mb,
                0, int64_t{1} << 30),
        IntFlag("stream-buffer", "N: responses buffered per stream before it pauses",
                &o.limits.stream_buffer, 1, 1 << 16),
        IntFlag("stalled-reader-timeout-s",
                "N: a paused stream whose client reads nothing this long is ended, its slot freed "
                "(0: never)",
                &stalled_reader_s, 0, int64_t{1} << 31),
        IntFlag("shutdown-grace-s", "N: on SIGTERM/SIGINT, time streams get to finish",
                &o.shutdown_grace_s, 0, 86400),
        StringFlag(
            "metrics-listen",
            "HOST:PORT for Prometheus /metrics over HTTP (port 0: pick one; \"off\" disables); "
            "serving goes on, with a warning, if it cannot bind",
            &o.metrics_listen),
        StringFlag("served-model-name",
                   "NAME: model_name label and GetModelInfo's model_name (default: the model "
                   "directory's name)",
                   &o.served_model_name, false),
    };
  }

  std::string Usage() const {
    std::string usage =
        "usage: mambaserve serve [--model DIR] [flags]\n"
        "Serves mambaserve.v1.MambaServe, grpc.health.v1.Health and server reflection over "
        "gRPC.\n\n";
    for (const Flag& f : table) {
      absl::StrAppend(&usage, "  --", f.name, "\n      ", f.help);
      if (f.current) absl::StrAppend(&usage, " (default ", f.current(), ")");
      usage += "\n";
    }
    return usage;
  }

  // Applies the parsed flags, then derives what depends on several of them.
  absl::Status Apply(const CommandLine& cl) {
    for (const Flag& f : table) {
      if (auto value = cl.Get(f.name)) RETURN_IF_ERROR(f.set(*value));
    }
    EngineOptions& e = o.engine;
    if (!model.empty()) {
      e.model_dir = model;
    } else {
      e.model_dir = model_cache;
      LogInfo("no --model: using the embedded tiny default model in ", e.model_dir);
      o.prepare_model = [dir = e.model_dir] { return EnsureDefaultModel(dir); };
    }
    if (o.metrics_listen == "off") o.metrics_listen.clear();
    ASSIGN_OR_RETURN(e.backend.kind, ParseBackendKind(backend));
    if (weight_dtype != "auto") {
      ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(weight_dtype));
      e.backend.weight_dtype = dtype;
    }
    // Every running sequence holds a slot, so the slots cover the batch.
    e.backend.num_slots = std::max(e.backend.num_slots, e.scheduler.max_batch);
    e.max_prompt_tokens = o.limits.max_prompt_tokens;
    e.scheduler.sessions.ttl_ms = ttl_s * 1000;
    e.scheduler.sessions.host_budget_bytes = host_budget_mb * 1024 * 1024;
    e.scheduler.stalled_reader_timeout_ms = stalled_reader_s * 1000;
    o.limits.sampling.max_tokens = max_tokens_limit;
    o.limits.default_max_tokens = std::min(o.limits.default_max_tokens, max_tokens_limit);
    return absl::OkStatus();
  }
};

absl::Status Serve(int argc, char** argv) {
  ServeFlags flags;
  std::set<std::string> names;
  for (const Flag& f : flags.table) names.insert(f.name);
  ASSIGN_OR_RETURN(CommandLine cl, CommandLine::Parse(argc, argv, names, {"help"}));
  if (cl.Has("help")) {
    std::cout << flags.Usage();
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(flags.Apply(cl));
  return RunServer(flags.o);
}

}  // namespace

int RunServeCommand(int argc, char** argv) {
  absl::Status status = Serve(argc, argv);
  if (!status.ok()) {
    LogError("serve: ", status.message());
    return 1;
  }
  // Every RPC has finished and the engine is released; skip gRPC's process-exit teardown, which
  // waits seconds for idle background threads and client connections to time out.
  std::fflush(nullptr);
  std::_Exit(0);
}

}  // namespace mambaserve
