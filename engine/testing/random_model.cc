#include "engine/testing/random_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/testing/safetensors_writer.h"

namespace mambaserve {
namespace {

// SplitMix64: tiny, fast and identical on every platform (unlike std::normal_distribution).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Normal() {
    const double u1 = 1.0 - Uniform(), u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  uint64_t state_;
};

uint64_t TensorSeed(uint64_t seed, std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9e3779b97f4a7c15ull);
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

constexpr double kOutProjGain = 8.0;

enum class Init { kNormal, kUniform, kOnesPlusNoise, kALog, kOnes, kDtBias };

struct ParamSpec {
  TensorSpec tensor;
  Init init;
  double scale;  // std for kNormal, bound for kUniform
};

std::vector<ParamSpec> ParamSpecs(const ModelConfig& c) {
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  // Embedding scale chosen so logits come out O(1-10), like trained models.
  const double emb_std = 2.0 / std::sqrt(static_cast<double>(D));
  std::vector<ParamSpec> specs;
  specs.push_back({{"backbone.embeddings.weight", {c.vocab_size, D}}, Init::kNormal, emb_std});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = absl::StrCat("backbone.layers.", i, ".");
    const std::string m = p + "mixer.";
    specs.push_back({{p + "norm.weight", {D}}, Init::kOnesPlusNoise, 0.1});
    specs.push_back(
        {{m + "in_proj.weight", {2 * E, D}}, Init::kNormal, 1.0 / std::sqrt(double(D))});
    if (c.use_bias) specs.push_back({{m + "in_proj.bias", {2 * E}}, Init::kNormal, 0.02});
    const double conv_bound = 1.0 / std::sqrt(double(K));  // PyTorch's default Conv1d init
    specs.push_back({{m + "conv1d.weight", {E, 1, K}}, Init::kUniform, conv_bound});
    if (c.use_conv_bias) specs.push_back({{m + "conv1d.bias", {E}}, Init::kUniform, conv_bound});
    specs.push_back(
        {{m + "x_proj.weight", {R + 2 * N, E}}, Init::kNormal, 1.0 / std::sqrt(double(E))});
    specs.push_back({{m + "dt_proj.weight", {E, R}}, Init::kUniform, 1.0 / std::sqrt(double(R))});
    specs.push_back({{m + "dt_proj.bias", {E}}, Init::kDtBias, 0.0});
    specs.push_back({{m + "A_log", {E, N}}, Init::kALog, 0.0});
    specs.push_back({{m + "D", {E}}, Init::kOnes, 0.0});
    // Larger than Mamba's 1/sqrt(n_layers) rescale: in an untrained model the mixers must dominate
    // the residual stream, or a tied lm_head just echoes the last input token.
    specs.push_back(
        {{m + "out_proj.weight", {D, E}}, Init::kNormal, kOutProjGain / std::sqrt(double(E))});
    if (c.use_bias) specs.push_back({{m + "out_proj.bias", {D}}, Init::kNormal, 0.02});
  }
  specs.push_back({{"backbone.norm_f.weight", {D}}, Init::kOnesPlusNoise, 0.1});
  if (!c.tie_word_embeddings) {
    specs.push_back({{"lm_head.weight", {c.vocab_size, D}}, Init::kNormal, emb_std});
  }
  return specs;
}

void Fill(const ParamSpec& spec, int64_t d_state, uint64_t seed, std::span<float> out) {
  Rng rng(TensorSeed(seed, spec.tensor.name));
  switch (spec.init) {
    case Init::kNormal:
      for (float& v : out) v = static_cast<float>(spec.scale * rng.Normal());
      return;
    case Init::kUniform:
      for (float& v : out) v = static_cast<float>(spec.scale * (2.0 * rng.Uniform() - 1.0));
      return;
    case Init::kOnesPlusNoise:
      for (float& v : out) v = static_cast<float>(1.0 + spec.scale * rng.Normal());
      return;
    case Init::kOnes:
      for (float& v : out) v = 1.0f;
      return;
    case Init::kALog:  // A = -(1..N) per channel (S4D-real)
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = static_cast<float>(std::log(double(i % d_state + 1)));
      return;
    case Init::kDtBias:
      // dt log-uniform in [1e-3, 0.1] (floor 1e-4); the bias is its inverse softplus.
      for (float& v : out) {
        const double lo = std::log(1e-3), hi = std::log(0.1);
        const double dt = std::max(1e-4, std::exp(lo + rng.Uniform() * (hi - lo)));
        v = static_cast<float>(dt + std::log(-std::expm1(-dt)));
      }
      return;
  }
}

}  // namespace

absl::StatusOr<ModelConfig> PresetConfig(std::string_view preset, ModelType type) {
  ModelConfig c;
  c.model_type = type;
  c.d_state = 16;
  c.d_conv = 4;
  if (preset == "tiny") {
    c.d_model = 64;
    c.n_layers = 2;
    c.vocab_size = 512;
  } else if (preset == "130m") {
    c.d_model = 768;
    c.n_layers = 24;
    c.vocab_size = 50280;
  } else if (preset == "370m") {
    c.d_model = 1024;
    c.n_layers = 48;
    c.vocab_size = 50280;
  } else if (preset == "7b") {  // Falcon-Mamba-7B's shapes
    c.d_model = 4096;
    c.n_layers = 64;
    c.vocab_size = 65024;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown preset \"", std::string(preset),
                                                   "\" (expected tiny, 130m, 370m or 7b)"));
  }
  c.d_inner = 2 * c.d_model;
  c.dt_rank = (c.d_model + 15) / 16;
  if (type == ModelType::kFalconMamba) {
    c.tie_word_embeddings = false;
    c.bos_token_id = 0;
    c.eos_token_id = 11;
    c.pad_token_id = 11;
  } else {
    c.bos_token_id = c.eos_token_id = c.pad_token_id = 0;
  }
  return c;
}

absl::Status WriteRandomModel(const ModelConfig& config, DType dtype, uint64_t seed,
                              const std::string& out_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat(out_dir, ": cannot create directory (", ec.message(), ")"));
  const std::string torch_dtype = dtype == DType::kBF16  ? "bfloat16"
                                  : dtype == DType::kF16 ? "float16"
                                                         : "float32";
  {
    std::ofstream config_file(fs::path(out_dir) / "config.json");
    config_file << ModelConfigToJson(config, torch_dtype);
    if (!config_file)
      return absl::InternalError(absl::StrCat(out_dir, "/config.json: write failed"));
  }
  const std::vector<ParamSpec> specs = ParamSpecs(config);
  std::vector<TensorSpec> tensors;
  for (const ParamSpec& s : specs) tensors.push_back(s.tensor);
  return WriteSafetensors(
      (fs::path(out_dir) / "model.safetensors").string(), tensors, dtype,
      [&](size_t i, std::span<float> out) { Fill(specs[i], config.d_state, seed, out); });
}

}  // namespace mambaserve
