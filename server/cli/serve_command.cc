// mambaserve serve: the gRPC server. Every flag is declared once (ServeFlags::Declare), with its
// help text, its bounds and where its value goes; --help and the parser both come from it.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"
#include "engine/model/safetensors.h"
#include "engine/serving/session_blob.h"
#include "engine/session_store/redis_url.h"
#include "server/cli/commands.h"
#include "server/cli/default_model.h"
#include "server/cli/flags.h"
#include "server/server.h"

namespace mambaserve {
namespace {

// "(0, 1]": the lower bound excluded, which CLI::Range cannot say.
CLI::Validator OpenClosedUnit() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        if (!absl::SimpleAtod(text, &v) || !(v > 0.0 && v <= 1.0)) {
          return absl::StrCat("Value ", text, " not in (0, 1]");
        }
        return "";
      },
      "FLOAT in (0, 1]");
}

// A secret file's bytes, less trailing whitespace (a newline from `openssl rand -hex 32 > FILE`).
absl::StatusOr<std::string> ReadSecretFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> secret = ReadTextFile(path);
  if (!secret.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  absl::StripTrailingAsciiWhitespace(&*secret);
  return secret;
}

absl::StatusOr<std::string> ReadBlobKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string key, ReadSecretFile("--session-blob-key", path));
  if (key.size() < kMinSessionBlobKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--session-blob-key: ", path, " holds ", key.size(), " bytes; a key needs at least ",
        kMinSessionBlobKeyBytes, " (e.g. `openssl rand -hex 32 > ", path, "`)"));
  }
  return key;
}

struct ServeFlags {
  ServeOptions o;
  std::string model, model_cache = DefaultModelCacheDir(), backend = "auto", weight_dtype = "auto",
                     log_level = "info", blob_key_file;
  int64_t ttl_s = 3600, host_budget_mb = 1024, stalled_reader_s = 120, prefix_cache_mb = 0;
  int max_tokens_limit = 4096;
  std::string session_store, session_store_password_file;
  StoredSessionsOptions store;
  int64_t store_timeout_ms = 2000, lease_s = 10, lease_wait_ms = 5000;

  // Every flag, once: name, help, bounds and where its value goes. --help is generated from it.
  void Declare(CLI::App& app) {
    constexpr int64_t kIntMax = INT_MAX;
    EngineOptions& e = o.engine;
    e.backend.num_slots = 128;
    e.scheduler.sessions.max_sessions = 65536;
    // A flag given twice takes its last value, so a wrapper's defaults can be overridden.
    app.option_defaults()->always_capture_default()->multi_option_policy(
        CLI::MultiOptionPolicy::TakeLast);
    app.add_option("--model", model,
                   "DIR: Hugging Face checkpoint dir (config.json, *.safetensors, tokenizer.json); "
                   "without it, the embedded default model (kjv-mamba, a small Mamba trained on "
                   "the King James Version), unpacked once into --model-cache");
    app.add_option("--model-cache", model_cache, "DIR: where the default model is unpacked");
    app.add_option("--listen", o.listen, "HOST:PORT for gRPC (port 0: pick a free one)");
    app.add_option("--port-file", o.port_file, "FILE: write the bound port here once listening");
    app.add_option("--log-level", log_level, "the least severe log lines written to stderr")
        ->check(CLI::IsMember({"info", "warning", "error"}));
    app.add_option("--backend", backend, "auto uses the CUDA module when a GPU is there")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
    app.add_option("--weight-dtype", weight_dtype,
                   "weights as held in memory (auto: bf16 stays bf16)")
        ->check(CLI::IsMember({"auto", "f32", "bf16"}));
    app.add_option("--threads", e.backend.num_threads, "CPU backend threads (0: all cores)")
        ->check(CLI::Range(0, 4096));
    app.add_option("--gpu-memory-fraction", e.backend.gpu_memory_fraction,
                   "CUDA share of device memory for weights + state slots")
        ->check(OpenClosedUnit());
    app.add_option("--gpu-device", e.backend.gpu_device, "CUDA device index")
        ->check(CLI::Range(0, 1024));
    app.add_option("--max-sessions", e.backend.num_slots,
                   "state slots (running sequences + resident sessions); must fit in memory, and "
                   "on CUDA is clamped to what fits the device")
        ->check(CLI::Range(int64_t{1}, kIntMax));
    app.add_option("--max-batch", e.scheduler.max_batch, "sequences decoded together per step")
        ->check(CLI::Range(int64_t{1}, kIntMax));
    app.add_option("--max-queue", e.scheduler.max_queue,
                   "accepted requests waiting for a slot; beyond, RESOURCE_EXHAUSTED")
        ->check(CLI::Range(0, 1 << 24));
    app.add_option("--max-step-tokens", e.scheduler.max_step_tokens,
                   "tokens per forward step (decodes first, prompts share the rest)")
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--max-prompt-tokens", o.limits.max_prompt_tokens, "longest prompt accepted")
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--max-tokens-limit", max_tokens_limit,
                   "largest max_tokens a request may ask for")
        ->check(CLI::Range(1, 1 << 24));
    app.add_option("--default-max-tokens", o.limits.default_max_tokens,
                   "max_tokens when a request leaves it unset")
        ->check(CLI::Range(1, 1 << 24));
    app.add_option("--session-ttl-s", ttl_s, "idle sessions expire after this (0: never)")
        ->check(CLI::Range(int64_t{0}, int64_t{10} * 365 * 86400));
    app.add_option("--max-named-sessions", e.scheduler.sessions.max_sessions,
                   "sessions that may exist at once; beyond, CreateSession/ImportSession answer "
                   "RESOURCE_EXHAUSTED")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
    app.add_option("--prefix-cache-mb", prefix_cache_mb,
                   "MB: keep states at every --prefix-cache-block-tokens boundary of prompts "
                   "without a session, so a prompt starting with a cached prefix prefills only the "
                   "rest (a shared system prompt is read once); 0: off")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
    app.add_option("--prefix-cache-block-tokens", o.engine.scheduler.prefix_cache_block_tokens,
                   "N: the prefix cache's block (states are kept at multiples of N tokens)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    app.add_option("--host-state-budget-mb", host_budget_mb,
                   "host memory for parked session states; oldest evicted beyond")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
    app.add_option("--stream-buffer", o.limits.stream_buffer,
                   "responses buffered per stream before it pauses")
        ->check(CLI::Range(1, 1 << 16));
    app.add_option("--stalled-reader-timeout-s", stalled_reader_s,
                   "a paused stream whose client reads nothing this long is ended, its slot freed "
                   "(0: never)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 31));
    app.add_option("--shutdown-grace-s", o.shutdown_grace_s,
                   "on SIGTERM/SIGINT, time streams get to finish")
        ->check(CLI::Range(0, 86400));
    app.add_option("--metrics-listen", o.metrics_listen,
                   "HOST:PORT for Prometheus /metrics over HTTP (port 0: pick one; \"off\" "
                   "disables); serving goes on, with a warning, if it cannot bind");
    app.add_option("--session-blob-key", blob_key_file,
                   "FILE: a secret of at least 32 bytes (e.g. `openssl rand -hex 32`); exported "
                   "sessions are signed with it (HMAC-SHA256) and only blobs signed with it are "
                   "imported");
    app.add_option("--session-store", session_store,
                   "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]: sessions are also kept in this "
                   "Redis, shared by every replica: a replica that gets a turn for a session it "
                   "does not hold (or holds an older version of) loads it, one turn at a time "
                   "per session runs anywhere (a lease in Redis), and a draining replica stores "
                   "its sessions before it exits");
    app.add_flag("--session-store-sync", store.sync,
                 "a turn's final response is sent only once the store has acknowledged the new "
                 "version (a completed turn is never lost); default: written right after it");
    app.add_option("--session-store-password-file", session_store_password_file,
                   "FILE: the Redis password (instead of one in the URL)");
    app.add_option("--session-store-prefix", store.store.key_prefix,
                   "key prefix in Redis, so that deployments can share one");
    app.add_option("--session-store-timeout-ms", store_timeout_ms,
                   "Redis connect and command timeout; beyond, the call needing it is UNAVAILABLE")
        ->check(CLI::Range(int64_t{1}, int64_t{600000}));
    app.add_option("--session-lease-s", lease_s,
                   "a session's lease lasts this long past a replica that died mid-turn")
        ->check(CLI::Range(int64_t{1}, int64_t{3600}));
    app.add_option("--session-lease-wait-ms", lease_wait_ms,
                   "how long a turn waits for the session's previous turn (on any replica) to "
                   "be stored; a turn still running elsewhere is ABORTED at once")
        ->check(CLI::Range(int64_t{0}, int64_t{600000}));
    app.add_option("--auth-tokens", o.auth_tokens_file,
                   "FILE: one \"TOKEN PRINCIPAL\" per line; every call but health and reflection "
                   "then needs \"authorization: Bearer TOKEN\", and each principal sees only its "
                   "own sessions (re-read when the file changes)");
    app.add_option("--tls-cert", o.tls.cert_file,
                   "FILE: PEM certificate chain; the gRPC port then speaks TLS only (files are "
                   "re-read when they change, see --tls-reload-interval-s)");
    app.add_option("--tls-key", o.tls.key_file, "FILE: PEM private key of --tls-cert");
    app.add_option("--tls-client-ca", o.tls.client_ca_file,
                   "FILE: PEM CA bundle; clients must then present a certificate it signed "
                   "(mutual TLS), and without --auth-tokens its common name is the principal "
                   "that owns sessions");
    app.add_option("--tls-reload-interval-s", o.tls.reload_interval_s,
                   "how often the TLS files are checked for new contents")
        ->check(CLI::Range(1, 86400));
    app.add_option(
           "--max-streams-per-principal", o.limits.max_streams_per_principal,
           "Generate streams one principal may have open (with --auth-tokens or mTLS; 0: no "
           "limit); beyond, RESOURCE_EXHAUSTED")
        ->check(CLI::Range(0, 1 << 24));
    app.add_option(
           "--max-sessions-per-principal", e.scheduler.sessions.max_sessions_per_owner,
           "sessions one principal may hold (with --auth-tokens or mTLS; 0: no limit beyond "
           "--max-named-sessions); beyond, RESOURCE_EXHAUSTED")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
    app.add_flag("--log-prompts", o.limits.log_prompts,
                 "also log each Generate call's prompt and generated text (escaped, 4 KiB each at "
                 "most); off by default, as they are the clients' data");
    app.add_option("--served-model-name", o.served_model_name,
                   "NAME: model_name label and GetModelInfo's model_name (default: the model "
                   "directory's name)");
  }

  // Derives what depends on several flags, once they are parsed.
  absl::Status Apply() {
    static const std::map<std::string, LogLevel> kLevels = {
        {"info", LogLevel::kInfo}, {"warning", LogLevel::kWarning}, {"error", LogLevel::kError}};
    SetMinLogLevel(kLevels.at(log_level));
    EngineOptions& e = o.engine;
    if (!model.empty()) {
      e.model_dir = model;
    } else {
      e.model_dir = model_cache;
      LogInfo("no --model: serving the embedded default model (kjv-mamba) from ", e.model_dir);
      o.prepare_model = [dir = e.model_dir] { return EnsureDefaultModel(dir); };
      if (o.served_model_name.empty()) o.served_model_name = "kjv-mamba";
    }
    if (o.metrics_listen == "off") o.metrics_listen.clear();
    if (!blob_key_file.empty()) {
      ASSIGN_OR_RETURN(e.scheduler.sessions.blob_key, ReadBlobKey(blob_key_file));
    }
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
    e.scheduler.prefix_cache_bytes = prefix_cache_mb * 1024 * 1024;
    e.scheduler.stalled_reader_timeout_ms = stalled_reader_s * 1000;
    if (!session_store.empty()) {
      ASSIGN_OR_RETURN(store.store.endpoint, ParseRedisUrl(session_store));
      if (!session_store_password_file.empty()) {
        ASSIGN_OR_RETURN(
            store.store.endpoint.password,
            ReadSecretFile("--session-store-password-file", session_store_password_file));
      }
      store.store.timeout = std::chrono::milliseconds(store_timeout_ms);
      store.lease_ttl = std::chrono::seconds(lease_s);
      store.lease_wait = std::chrono::milliseconds(lease_wait_ms);
      store.session_ttl = std::chrono::seconds(ttl_s);
      e.session_store = store;
      LogInfo("session store: ", RedactedRedisUrl(session_store),
              store.sync ? " (turns acknowledged by the store before they complete)"
                         : " (turns written behind)");
    }
    o.limits.sampling.max_tokens = max_tokens_limit;
    o.limits.default_max_tokens = std::min(o.limits.default_max_tokens, max_tokens_limit);
    return absl::OkStatus();
  }
};

}  // namespace

int RunServeCommand(int argc, char** argv) {
  ServeFlags flags;
  CLI::App app{
      "Serves mambaserve.v1.MambaServe, grpc.health.v1.Health and server reflection over gRPC.",
      "mambaserve serve"};
  flags.Declare(app);
  if (std::optional<int> exit = ParseFlags(app, argc, argv)) return *exit;
  absl::Status status = flags.Apply();
  if (status.ok()) status = RunServer(flags.o);
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
