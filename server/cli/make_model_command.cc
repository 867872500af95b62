// mambaserve make-model: a deterministic random checkpoint in the Hugging Face layout.
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include "engine/base/status_macros.h"
#include "engine/testing/random_model.h"
#include "server/cli/commands.h"
#include "server/cli/flags.h"
#include "server/cli/model_tokenizer.h"

namespace mambaserve {
namespace {

struct MakeModelFlags {
  std::string preset = "tiny", type_name = "mamba", dtype = "f32", out, tokenizer;
  int64_t seed = 0;
  // Shape overrides, applied to the preset when given.
  int64_t layers = 0, d_state = 0, d_conv = 0, vocab = 0;
  bool use_bias = false, no_conv_bias = false, no_residual_in_fp32 = false,
       untie_embeddings = false, tie_embeddings = false;
  CLI::Option *layers_set, *d_state_set, *d_conv_set, *vocab_set, *tokenizer_set;

  void Declare(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    app.add_option("--preset", preset, "the shape")
        ->check(CLI::IsMember({"tiny", "130m", "370m", "7b"}));
    app.add_option("--model-type", type_name, "the architecture")
        ->check(CLI::IsMember({"mamba", "falcon_mamba"}));
    app.add_option("--dtype", dtype, "weights as stored")
        ->check(CLI::IsMember({"f32", "f16", "bf16"}));
    app.add_option("--seed", seed, "same flags, same bytes");
    app.add_option("--out", out, "DIR: written (created if missing)")->required();
    layers_set = app.add_option("--layers", layers, "L: layers instead of the preset's")
                     ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
    d_state_set = app.add_option("--d-state", d_state, "N: SSM state size instead of the preset's")
                      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
    d_conv_set = app.add_option("--d-conv", d_conv, "K: conv kernel instead of the preset's")
                     ->check(CLI::Range(int64_t{2}, int64_t{1} << 10));
    vocab_set = app.add_option("--vocab", vocab, "V: vocabulary instead of the preset's")
                    ->check(CLI::Range(int64_t{2}, int64_t{1} << 24));
    tokenizer_set = app.add_option(
        "--tokenizer", tokenizer,
        "FILE: copy this tokenizer.json (its vocabulary must fit V); without it, a byte-level BPE "
        "trained on an embedded English sample when V <= 4096, else none");
    app.add_flag("--use-bias", use_bias, "biases on in_proj/out_proj");
    app.add_flag("--no-conv-bias", no_conv_bias, "no conv1d bias");
    app.add_flag("--no-residual-in-fp32", no_residual_in_fp32, "residual kept in the weight dtype");
    CLI::Option* untie =
        app.add_flag("--untie-embeddings", untie_embeddings, "a separate lm_head.weight");
    app.add_flag("--tie-embeddings", tie_embeddings, "lm_head shares the embedding")
        ->excludes(untie);
  }
};

absl::Status MakeModel(const MakeModelFlags& f) {
  const ModelType type = f.type_name == "mamba" ? ModelType::kMamba : ModelType::kFalconMamba;
  ASSIGN_OR_RETURN(ModelConfig config, PresetConfig(f.preset, type));
  ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(f.dtype));
  if (f.layers_set->count() > 0) config.n_layers = f.layers;
  if (f.d_state_set->count() > 0) config.d_state = f.d_state;
  if (f.d_conv_set->count() > 0) config.d_conv = f.d_conv;
  if (f.vocab_set->count() > 0) config.vocab_size = f.vocab;
  if (f.use_bias) config.use_bias = true;
  if (f.no_conv_bias) config.use_conv_bias = false;
  if (f.no_residual_in_fp32) config.residual_in_fp32 = false;
  if (f.untie_embeddings) config.tie_word_embeddings = false;
  if (f.tie_embeddings) config.tie_word_embeddings = true;
  RETURN_IF_ERROR(WriteRandomModel(config, dtype, static_cast<uint64_t>(f.seed), f.out));
  std::optional<std::string> tokenizer;
  if (f.tokenizer_set->count() > 0) tokenizer = f.tokenizer;
  return WriteModelTokenizer(config.vocab_size, tokenizer, f.out);
}

}  // namespace

int RunMakeModelCommand(int argc, char** argv) {
  return RunSubcommand<MakeModelFlags>(
      "make-model",
      "Writes config.json + model.safetensors with Mamba's initialisation, and tokenizer.json, "
      "in the Hugging Face layout. Same flags, same bytes.",
      argc, argv, MakeModel);
}

}  // namespace mambaserve
