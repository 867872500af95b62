// Fuzz target for config.json, the first file a model directory is read by. Properties: parsing
// never crashes, hangs or reads out of bounds; a config it accepts has sizes a model can have
// (positive where config.json settles them, none above kMaxConfigSize, so no size product
// overflows), and survives a round trip through the config.json the project writes. The sizes
// only tensor shapes settle (intermediate_size, vocab_size, time_step_rank) may be absent (0).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "engine/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<mambaserve::ModelConfig> config =
      mambaserve::ParseModelConfigJson(text, "config.json");
  if (!config.ok()) return 0;
  const mambaserve::ModelConfig& c = *config;
  for (int64_t settled : {c.n_layers, c.d_model, c.d_state, c.d_conv}) {
    if (settled <= 0 || settled > mambaserve::kMaxConfigSize) std::abort();
  }
  for (int64_t provisional : {c.d_inner, c.vocab_size, c.dt_rank}) {
    if (provisional < 0 || provisional > mambaserve::kMaxConfigSize) std::abort();
  }
  if (c.state_bytes() < 0) std::abort();
  absl::StatusOr<mambaserve::ModelConfig> again = mambaserve::ParseModelConfigJson(
      mambaserve::ModelConfigToJson(*config, "float32"), "config.json");
  if (!again.ok() || again->n_layers != c.n_layers || again->d_model != c.d_model ||
      again->d_state != c.d_state || again->d_conv != c.d_conv || again->d_inner != c.d_inner ||
      again->vocab_size != c.vocab_size) {
    std::abort();
  }
  return 0;
}
