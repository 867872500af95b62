#include "engine/model/model_config.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace mambaserve {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view file, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": field \"", field, "\" ", what));
}

// Reads an optional integer field; absent or null leaves *out unchanged.
absl::Status ReadInt(const json& j, absl::string_view file, const char* field, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(file, field, "must be an integer");
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, absl::string_view file, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(file, field, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, absl::string_view file, const char* field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(file, field, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

// eos_token_id may be an int or a list of ints (first one wins).
absl::Status ReadTokenId(const json& j, absl::string_view file, const char* field, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
    *out = (*it)[0].get<int64_t>();
    return absl::OkStatus();
  }
  return ReadInt(j, file, field, out);
}

}  // namespace

const char* ModelTypeName(ModelType type) {
  return type == ModelType::kFalconMamba ? "falcon_mamba" : "mamba";
}

absl::StatusOr<ModelConfig> ParseModelConfigJson(std::string_view text, const std::string& file) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a JSON object"));
  }
  ModelConfig c;
  auto type_it = j.find("model_type");
  if (type_it == j.end() || !type_it->is_string()) {
    return FieldError(file, "model_type", "is missing (expected \"mamba\" or \"falcon_mamba\")");
  }
  const std::string type = type_it->get<std::string>();
  if (type == "mamba") {
    c.model_type = ModelType::kMamba;
  } else if (type == "falcon_mamba") {
    c.model_type = ModelType::kFalconMamba;
  } else {
    return FieldError(file, "model_type",
                      absl::StrCat("is \"", type, "\"; supported: \"mamba\", \"falcon_mamba\""));
  }
  absl::Status s;
  auto read = [&](absl::Status st) {
    if (s.ok()) s = std::move(st);
  };
  read(ReadInt(j, file, "hidden_size", &c.d_model));
  read(ReadInt(j, file, "num_hidden_layers", &c.n_layers));
  read(ReadInt(j, file, "state_size", &c.d_state));
  read(ReadInt(j, file, "conv_kernel", &c.d_conv));
  read(ReadInt(j, file, "vocab_size", &c.vocab_size));
  read(ReadInt(j, file, "intermediate_size", &c.d_inner));
  read(ReadDouble(j, file, "layer_norm_epsilon", &c.layer_norm_epsilon));
  read(ReadDouble(j, file, "mixer_rms_eps", &c.mixer_rms_eps));
  read(ReadBool(j, file, "use_bias", &c.use_bias));
  read(ReadBool(j, file, "use_conv_bias", &c.use_conv_bias));
  read(ReadBool(j, file, "residual_in_fp32", &c.residual_in_fp32));
  read(ReadBool(j, file, "tie_word_embeddings", &c.tie_word_embeddings));
  read(ReadTokenId(j, file, "bos_token_id", &c.bos_token_id));
  read(ReadTokenId(j, file, "eos_token_id", &c.eos_token_id));
  read(ReadTokenId(j, file, "pad_token_id", &c.pad_token_id));
  // time_step_rank is an int or "auto" (= ceil(hidden_size / 16)); the dt_proj shape decides
  // anyway.
  auto rank_it = j.find("time_step_rank");
  if (rank_it != j.end() && rank_it->is_number_integer()) c.dt_rank = rank_it->get<int64_t>();
  if (!s.ok()) return s;

  for (auto [field, value] : {std::pair{"hidden_size", c.d_model},
                              {"num_hidden_layers", c.n_layers},
                              {"state_size", c.d_state},
                              {"conv_kernel", c.d_conv},
                              {"intermediate_size", c.d_inner},
                              {"vocab_size", c.vocab_size},
                              {"time_step_rank", c.dt_rank}}) {
    if (value > kMaxConfigSize) {
      return FieldError(file, field, absl::StrCat("is ", value, "; at most ", kMaxConfigSize));
    }
    // 0 is "not given" for the sizes only tensor shapes settle; below it nothing is a size.
    if (value < 0) return FieldError(file, field, absl::StrCat("is ", value, "; a size is >= 0"));
  }
  if (c.d_model <= 0) return FieldError(file, "hidden_size", "must be a positive integer");
  if (c.n_layers <= 0) return FieldError(file, "num_hidden_layers", "must be a positive integer");
  if (c.d_state <= 0) return FieldError(file, "state_size", "must be a positive integer");
  if (c.d_conv < 2) return FieldError(file, "conv_kernel", "must be at least 2");
  if (!(c.layer_norm_epsilon > 0))
    return FieldError(file, "layer_norm_epsilon", "must be positive");
  if (!(c.mixer_rms_eps > 0)) return FieldError(file, "mixer_rms_eps", "must be positive");
  return c;
}

std::string ModelConfigToJson(const ModelConfig& c, std::string_view torch_dtype) {
  json j;
  j["architectures"] = {c.model_type == ModelType::kFalconMamba ? "FalconMambaForCausalLM"
                                                                : "MambaForCausalLM"};
  j["model_type"] = std::string(ModelTypeName(c.model_type));
  j["hidden_size"] = c.d_model;
  j["num_hidden_layers"] = c.n_layers;
  j["intermediate_size"] = c.d_inner;
  j["expand"] = c.d_model > 0 ? c.d_inner / c.d_model : 2;
  j["state_size"] = c.d_state;
  j["conv_kernel"] = c.d_conv;
  j["time_step_rank"] = c.dt_rank;
  j["vocab_size"] = c.vocab_size;
  j["layer_norm_epsilon"] = c.layer_norm_epsilon;
  if (c.model_type == ModelType::kFalconMamba) j["mixer_rms_eps"] = c.mixer_rms_eps;
  j["use_bias"] = c.use_bias;
  j["use_conv_bias"] = c.use_conv_bias;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["pad_token_id"] = c.pad_token_id;
  j["torch_dtype"] = std::string(torch_dtype);
  return j.dump(2) + "\n";
}

}  // namespace mambaserve
