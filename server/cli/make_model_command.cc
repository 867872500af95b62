// mambaserve make-model: a deterministic random checkpoint in the Hugging Face layout.
#include <filesystem>
#include <iostream>

#include "engine/base/status_macros.h"
#include "engine/testing/random_model.h"
#include "server/cli/command_line.h"
#include "server/cli/commands.h"
#include "server/cli/model_tokenizer.h"

namespace mambaserve {
namespace {

constexpr char kUsage[] =
    R"(usage: mambaserve make-model --preset tiny|130m|370m --model-type mamba|falcon_mamba
                            --dtype f32|f16|bf16 --seed N --out DIR
  optional shape overrides: --layers L --d-state N --d-conv K --vocab V
  optional switches:        --use-bias --no-conv-bias --no-residual-in-fp32
                            --untie-embeddings | --tie-embeddings
  tokenizer:                --tokenizer FILE   copy this tokenizer.json (its vocabulary must fit V)
Writes config.json + model.safetensors with Mamba's initialisation, and tokenizer.json: a byte-level
BPE trained on an embedded English sample when V <= 4096, else the --tokenizer file (none without it).
Same flags, same bytes.
)";

absl::Status MakeModel(int argc, char** argv) {
  ASSIGN_OR_RETURN(CommandLine cl,
                   CommandLine::Parse(argc, argv,
                                      {"preset", "model-type", "dtype", "seed", "out", "layers",
                                       "d-state", "d-conv", "vocab", "tokenizer"},
                                      {"use-bias", "no-conv-bias", "no-residual-in-fp32",
                                       "untie-embeddings", "tie-embeddings", "help"}));
  if (cl.Has("help")) {
    std::cout << kUsage;
    return absl::OkStatus();
  }
  const std::string type_name = cl.GetOr("model-type", "mamba");
  ModelType type;
  if (type_name == "mamba") {
    type = ModelType::kMamba;
  } else if (type_name == "falcon_mamba") {
    type = ModelType::kFalconMamba;
  } else {
    return absl::InvalidArgumentError("--model-type must be mamba or falcon_mamba");
  }
  ASSIGN_OR_RETURN(ModelConfig config, PresetConfig(cl.GetOr("preset", "tiny"), type));
  ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(cl.GetOr("dtype", "f32")));
  ASSIGN_OR_RETURN(int64_t seed, cl.GetInt("seed", 0));
  ASSIGN_OR_RETURN(std::string out, cl.Require("out"));
  ASSIGN_OR_RETURN(config.n_layers, cl.GetInt("layers", config.n_layers));
  ASSIGN_OR_RETURN(config.d_state, cl.GetInt("d-state", config.d_state));
  ASSIGN_OR_RETURN(config.d_conv, cl.GetInt("d-conv", config.d_conv));
  ASSIGN_OR_RETURN(config.vocab_size, cl.GetInt("vocab", config.vocab_size));
  if (config.n_layers < 1 || config.d_state < 1 || config.d_conv < 2 || config.vocab_size < 2) {
    return absl::InvalidArgumentError(
        "need --layers >= 1, --d-state >= 1, --d-conv >= 2, --vocab >= 2");
  }
  if (cl.Has("use-bias")) config.use_bias = true;
  if (cl.Has("no-conv-bias")) config.use_conv_bias = false;
  if (cl.Has("no-residual-in-fp32")) config.residual_in_fp32 = false;
  if (cl.Has("untie-embeddings")) config.tie_word_embeddings = false;
  if (cl.Has("tie-embeddings")) config.tie_word_embeddings = true;
  RETURN_IF_ERROR(WriteRandomModel(config, dtype, static_cast<uint64_t>(seed), out));
  return WriteModelTokenizer(config.vocab_size, cl.Get("tokenizer"), out);
}

}  // namespace

int RunMakeModelCommand(int argc, char** argv) {
  absl::Status status = MakeModel(argc, argv);
  if (!status.ok()) {
    std::cerr << "make-model: " << status.message() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace mambaserve
