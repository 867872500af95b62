// Architecture of a Mamba-1 / Falcon-Mamba checkpoint, in native types (no JSON beyond this file).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mambaserve {

enum class ModelType { kMamba, kFalconMamba };
const char* ModelTypeName(ModelType type);  // "mamba" / "falcon_mamba"

struct ModelConfig {
  ModelType model_type = ModelType::kMamba;
  int64_t d_model = 0;   // D, hidden_size
  int64_t n_layers = 0;  // num_hidden_layers
  int64_t d_inner = 0;   // E, from in_proj's shape (config's expand/intermediate_size can be wrong)
  int64_t d_state = 0;   // N, state_size
  int64_t d_conv = 0;    // K, conv_kernel
  int64_t dt_rank = 0;   // R, from dt_proj's shape
  int64_t vocab_size = 0;  // V, embedding rows
  double layer_norm_epsilon = 1e-5;
  double mixer_rms_eps = 1e-6;  // Falcon-Mamba's weightless B/C/dt RMSNorm
  bool use_bias = false;        // in_proj / out_proj biases
  bool use_conv_bias = true;
  bool residual_in_fp32 = true;
  bool tie_word_embeddings = true;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;

  // Per-sequence state: conv [layers][E][K-1] + ssm [layers][E][N], both fp32.
  int64_t conv_state_floats() const { return n_layers * d_inner * (d_conv - 1); }
  int64_t ssm_state_floats() const { return n_layers * d_inner * d_state; }
  int64_t state_bytes() const { return 4 * (conv_state_floats() + ssm_state_floats()); }
};

// The largest value config.json may give any size (hidden_size, num_hidden_layers, state_size,
// conv_kernel, intermediate_size, vocab_size, time_step_rank): far above any real checkpoint's
// (Falcon-Mamba-7B's largest is vocab_size 65024), and small enough that products of three sizes,
// state bytes included, cannot overflow int64.
inline constexpr int64_t kMaxConfigSize = int64_t{1} << 20;

// Reads config.json fields. Sizes that only tensor shapes can settle (E, R, V) are provisional
// here; LoadModel replaces them with the shapes' values.
absl::StatusOr<ModelConfig> ParseModelConfigJson(std::string_view text,
                                                 const std::string& file_name);

// The config.json a Hugging Face checkpoint of this architecture carries.
std::string ModelConfigToJson(const ModelConfig& config, std::string_view torch_dtype);

}  // namespace mambaserve
