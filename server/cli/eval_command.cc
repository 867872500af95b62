// mambaserve eval: last-position logits and greedy tokens for a prompt, as JSON.
#include <iostream>

#include "engine/backend/backend.h"
#include "engine/backend/greedy.h"
#include "engine/backend_factory.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/cli/command_line.h"
#include "server/cli/commands.h"

namespace mambaserve {
namespace {

constexpr char kUsage[] =
    R"(usage: mambaserve eval --model DIR --tokens 5,17,42 --generate 16 --json OUT
                      [--backend auto|cpu|cuda] [--weight-dtype f32|bf16] [--threads N]
Writes {"last_logits": [V floats at the last prompt position], "generated": [greedy ids]}.
)";

absl::Status Eval(int argc, char** argv) {
  ASSIGN_OR_RETURN(CommandLine cl, CommandLine::Parse(argc, argv,
                                                      {"model", "tokens", "generate", "json",
                                                       "backend", "weight-dtype", "threads"},
                                                      {"help"}));
  if (cl.Has("help")) {
    std::cout << kUsage;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string dir, cl.Require("model"));
  ASSIGN_OR_RETURN(std::string tokens_text, cl.Require("tokens"));
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ParseIdList(tokens_text));
  ASSIGN_OR_RETURN(int64_t generate, cl.GetInt("generate", 16, 0, 1 << 20));
  ASSIGN_OR_RETURN(std::string json_path, cl.Require("json"));

  BackendOptions options;
  options.num_slots = 1;
  ASSIGN_OR_RETURN(options.kind, ParseBackendKind(cl.GetOr("backend", "cpu")));
  ASSIGN_OR_RETURN(int64_t threads, cl.GetInt("threads", 0, 0, 4096));
  options.num_threads = static_cast<int>(threads);
  if (auto wd = cl.Get("weight-dtype")) {
    ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(*wd));
    options.weight_dtype = dtype;
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> model, LoadModel(dir));
  for (int32_t t : tokens) {
    if (t >= model->config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " >= vocab size ", model->config.vocab_size));
    }
  }
  std::string fallback_reason;
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                   CreateBackend(model, options, &fallback_reason));
  if (!fallback_reason.empty())
    std::cerr << "eval: using the CPU backend: " << fallback_reason << "\n";
  ASSIGN_OR_RETURN(GreedyResult result,
                   GreedyGenerate(*backend, 0, tokens, static_cast<int>(generate)));
  nlohmann::json out;
  out["last_logits"] = result.last_logits;
  out["generated"] = result.generated;
  const BackendInfo info = backend->info();
  out["backend"] = info.name;
  out["device"] = info.device;
  out["weight_dtype"] = DTypeName(info.weight_dtype);
  if (!fallback_reason.empty()) out["fallback_reason"] = fallback_reason;
  return WriteOutputFile(json_path, out.dump() + "\n");
}

}  // namespace

int RunEvalCommand(int argc, char** argv) {
  absl::Status status = Eval(argc, argv);
  if (!status.ok()) {
    std::cerr << "eval: " << status.message() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace mambaserve
