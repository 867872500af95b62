// The CPU implementation of Backend: OpenBLAS GEMMs (one BLAS thread per pool thread, split over
// output rows) and the mixer ops of mixer_ops.h, over a HostStatePool.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/state_pool.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/cpu/weight_matrix.h"
#include "engine/backend/step_plan.h"

namespace mambaserve {

class CpuBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(std::shared_ptr<const Model> model,
                                                            const BackendOptions& options);

  const ModelConfig& config() const override { return config_; }
  BackendInfo info() const override;
  absl::Status Forward(const Step& step, StepOutput* out) override;
  absl::Status ResetSlot(int slot) override;
  absl::Status ReadSlot(int slot, std::span<uint8_t> out) override;
  absl::Status WriteSlot(int slot, std::span<const uint8_t> in) override;

 private:
  struct Layer {
    std::vector<float> norm;           // [D]
    WeightMatrix in_proj;              // [2E][D]
    std::vector<float> in_proj_bias;   // [2E] or empty
    std::vector<float> conv_weight;    // [E][K]
    std::vector<float> conv_bias;      // [E] or empty
    WeightMatrix x_proj;               // [R+2N][E]
    WeightMatrix dt_proj;              // [E][R]
    std::vector<float> dt_bias;        // [E]
    std::vector<float> a;              // [E][N] = -exp(A_log)
    std::vector<float> d;              // [E]
    WeightMatrix out_proj;             // [D][E]
    std::vector<float> out_proj_bias;  // [D] or empty
  };
  using Chunk = PassChunk;

  CpuBackend(const ModelConfig& config, const BackendOptions& options);
  void RunPass(const std::vector<Chunk>& chunks, int64_t rows, StepOutput* out);
  void RunLayer(const Layer& layer, int64_t layer_index, const std::vector<Chunk>& chunks,
                int64_t rows);

  ModelConfig config_;
  int max_rows_;
  ThreadPool pool_;
  std::vector<Layer> layers_;
  WeightMatrix embeddings_;  // [V][D]
  std::vector<float> norm_f_;
  WeightMatrix lm_head_;  // [V][D]; empty when tied to embeddings_
  bool tied_ = true;
  HostStatePool states_;

  // Scratch for one pass of at most max_rows_ tokens: allocated once.
  std::vector<int32_t> pass_tokens_;  // [rows]
  std::vector<float> residual_;       // [rows][D]
  std::vector<float> hidden_;         // [rows][D]
  std::vector<float> xz_;             // [rows][2E]
  std::vector<float> x_conv_;         // [rows][E]
  std::vector<float> x_dbl_;          // [rows][R+2N]
  std::vector<float> dt_;             // [rows][E]
  std::vector<float> y_;              // [rows][E]
  std::vector<float> final_;          // [rows][D] normalised rows that emit logits
};

}  // namespace mambaserve
