// mambaserve eval: last-position logits and greedy tokens for a prompt, as JSON.
#include <iostream>
#include <optional>

#include "engine/backend/backend.h"
#include "engine/backend/greedy.h"
#include "engine/backend_factory.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"

namespace mambaserve {
namespace {

struct EvalFlags {
  std::string dir, json_path, backend = "cpu", weight_dtype;
  std::vector<int32_t> tokens;
  int generate = 16, threads = 0;

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--model", dir, "DIR: the checkpoint")->required();
    app.add_option("--tokens", tokens, "5,17,42: the prompt's token ids")
        ->delimiter(',')
        ->check(CLI::NonNegativeNumber)
        ->required();
    app.add_option("--generate", generate, "greedy tokens to generate")
        ->check(CLI::Range(0, 1 << 20));
    app.add_option("--json", json_path, "OUT: where the JSON goes (- for stdout)")->required();
    app.add_option("--backend", backend, "auto: the CUDA module when a GPU is there")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
    app.add_option("--weight-dtype", weight_dtype, "weights as held in memory (default: as stored)")
        ->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--threads", threads, "CPU backend threads (0: all cores)")
        ->check(CLI::Range(0, 4096));
  }
};

absl::Status Eval(const EvalFlags& flags) {
  const std::string& dir = flags.dir;
  const std::vector<int32_t>& tokens = flags.tokens;
  BackendOptions options;
  options.num_slots = 1;
  ASSIGN_OR_RETURN(options.kind, ParseBackendKind(flags.backend));
  options.num_threads = flags.threads;
  if (!flags.weight_dtype.empty()) {
    ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(flags.weight_dtype));
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
  ASSIGN_OR_RETURN(GreedyResult result, GreedyGenerate(*backend, 0, tokens, flags.generate));
  nlohmann::json out;
  out["last_logits"] = result.last_logits;
  out["generated"] = result.generated;
  const BackendInfo info = backend->info();
  out["backend"] = info.name;
  out["device"] = info.device;
  out["weight_dtype"] = DTypeName(info.weight_dtype);
  if (!fallback_reason.empty()) out["fallback_reason"] = fallback_reason;
  return WriteOutputFile(flags.json_path, out.dump() + "\n");
}

}  // namespace

int RunEvalCommand(int argc, char** argv) {
  return RunSubcommand<EvalFlags>(
      "eval",
      "Writes {\"last_logits\": [V floats at the last prompt position], \"generated\": [greedy "
      "ids]} for a prompt.",
      argc, argv, Eval);
}

}  // namespace mambaserve
