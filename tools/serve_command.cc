// mambaserve serve: the gRPC server.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "engine/status_macros.h"
#include "server/log.h"
#include "server/server.h"
#include "tools/command_line.h"
#include "tools/commands.h"
#include "tools/model_tokenizer.h"

namespace mambaserve {
namespace {

constexpr char kUsage[] = R"(usage: mambaserve serve [--model DIR] [flags]
Serves mambaserve.v1.MambaServe, grpc.health.v1.Health and server reflection over gRPC.

  --model DIR                Hugging Face checkpoint dir (config.json, *.safetensors, tokenizer.json).
                             Without it: the embedded tiny default model, generated once into
                             --model-cache (default $XDG_CACHE_HOME/mambaserve/default-tiny).
  --model-cache DIR          where the default model is written
  --listen HOST:PORT         default 127.0.0.1:50051 (port 0: pick a free one)
  --port-file FILE           write the bound port here once listening
  --backend auto|cpu|cuda    default auto (CUDA module when present, else CPU)
  --weight-dtype f32|bf16    weights as held in memory (default: bf16 checkpoints stay bf16)
  --threads N                CPU backend threads (default: all cores)
  --gpu-memory-fraction F    CUDA: share of device memory for weights + state slots (default 0.9);
                             --max-sessions is clamped to the slots that fit
  --gpu-device N             CUDA device index (default 0)
  --max-sessions N           state slots: running sequences + resident sessions (default 128)
  --max-batch N              sequences decoded together per step (default 64)
  --max-queue N              accepted requests waiting for a slot; beyond: RESOURCE_EXHAUSTED (default 256)
  --max-step-tokens N        tokens per forward step; long prompts prefill in chunks of this (default 256)
  --max-prompt-tokens N      longest prompt accepted (default 8192)
  --max-tokens-limit N       largest max_tokens a request may ask for (default 4096)
  --default-max-tokens N     max_tokens when a request leaves it unset (default 256)
  --session-ttl-s N          idle sessions expire after this (default 3600; 0 = never)
  --max-named-sessions N     sessions that may exist at once; beyond, CreateSession/ImportSession
                             answer RESOURCE_EXHAUSTED (default 65536)
  --host-state-budget-mb N   host memory for parked session states; oldest evicted beyond (default 1024)
  --stream-buffer N          responses buffered per stream before it pauses (default 16)
  --stalled-reader-timeout-s N  a paused stream whose client reads nothing this long is ended and
                             its slot freed (default 120; 0 = never)
  --shutdown-grace-s N       on SIGTERM/SIGINT, time streams get to finish (default 10)
  --metrics-listen HOST:PORT Prometheus /metrics over HTTP (default 127.0.0.1:9400; port 0: pick one;
                             "off" disables). Serving goes on, with a warning, if it cannot bind.
  --served-model-name NAME   model_name label on the metrics (default: the model directory's name)
)";

absl::Status Serve(int argc, char** argv) {
  ASSIGN_OR_RETURN(CommandLine cl,
                   CommandLine::Parse(argc, argv,
                                      {"model", "model-cache", "listen", "port-file", "backend", "weight-dtype",
                                       "threads", "max-sessions", "max-batch", "max-queue", "max-step-tokens",
                                       "max-prompt-tokens", "max-tokens-limit", "default-max-tokens",
                                       "session-ttl-s", "max-named-sessions", "host-state-budget-mb", "stream-buffer", "stalled-reader-timeout-s", "shutdown-grace-s",
                                       "metrics-listen", "served-model-name", "gpu-memory-fraction", "gpu-device"},
                                      {"help"}));
  if (cl.Has("help")) {
    std::cout << kUsage;
    return absl::OkStatus();
  }
  ServeOptions o;
  if (auto model = cl.Get("model")) {
    o.model_dir = *model;
  } else {
    o.model_dir = cl.GetOr("model-cache", DefaultModelCacheDir());
    LogInfo("no --model: using the embedded tiny default model in ", o.model_dir);
    o.prepare_model = [dir = o.model_dir] { return EnsureDefaultModel(dir); };
  }
  o.listen = cl.GetOr("listen", o.listen);
  o.port_file = cl.GetOr("port-file", "");
  o.metrics_listen = cl.GetOr("metrics-listen", o.metrics_listen);
  if (o.metrics_listen == "off") o.metrics_listen.clear();
  o.served_model_name = cl.GetOr("served-model-name", "");
  ASSIGN_OR_RETURN(o.backend, ParseBackendKind(cl.GetOr("backend", "auto")));
  if (auto wd = cl.Get("weight-dtype")) {
    ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(*wd));
    o.weight_dtype = dtype;
  }
  ASSIGN_OR_RETURN(o.gpu_memory_fraction, cl.GetDouble("gpu-memory-fraction", o.gpu_memory_fraction));
  if (!(o.gpu_memory_fraction > 0.0 && o.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError("--gpu-memory-fraction must be in (0, 1]");
  }
  struct IntFlag {
    const char* name;
    int64_t min;
    int64_t* value64;
    int* value;
  };
  const IntFlag flags[] = {
      {"threads", 0, nullptr, &o.threads},
      {"gpu-device", 0, nullptr, &o.gpu_device},
      {"max-sessions", 1, nullptr, &o.max_sessions},
      {"max-batch", 1, nullptr, &o.max_batch},
      {"max-queue", 0, nullptr, &o.max_queue},
      {"max-step-tokens", 1, nullptr, &o.max_step_tokens},
      {"max-prompt-tokens", 1, nullptr, &o.max_prompt_tokens},
      {"max-tokens-limit", 1, nullptr, &o.max_tokens_limit},
      {"default-max-tokens", 1, nullptr, &o.default_max_tokens},
      {"session-ttl-s", 0, &o.session_ttl_s, nullptr},
      {"max-named-sessions", 1, &o.max_named_sessions, nullptr},
      {"host-state-budget-mb", 0, &o.host_state_budget_mb, nullptr},
      {"stream-buffer", 1, nullptr, &o.stream_buffer},
      {"stalled-reader-timeout-s", 0, &o.stalled_reader_timeout_s, nullptr},
      {"shutdown-grace-s", 0, nullptr, &o.shutdown_grace_s},
  };
  for (const IntFlag& f : flags) {
    ASSIGN_OR_RETURN(int64_t v, cl.GetInt(f.name, f.value64 ? *f.value64 : *f.value));
    if (v < f.min || v > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(absl::StrCat("--", f.name, " must be >= ", f.min));
    }
    if (f.value64) {
      *f.value64 = v;
    } else {
      *f.value = static_cast<int>(v);
    }
  }
  return RunServer(o);
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
