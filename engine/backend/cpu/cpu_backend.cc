#include "engine/backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/blas_kernels.h"
#include "engine/backend/cpu/mixer_ops.h"
#include "engine/backend/greedy.h"
#include "engine/backend/step_plan.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

std::vector<float> ToF32(const TensorView* tensor) {
  if (tensor == nullptr) return {};
  std::vector<float> out(static_cast<size_t>(tensor->numel()));
  ConvertToF32(tensor->dtype, tensor->data, out.size(), out.data());
  return out;
}

void AddBias(float* y, int64_t rows, int64_t ld, const std::vector<float>& bias) {
  if (bias.empty()) return;
  for (int64_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < bias.size(); ++i) y[r * ld + i] += bias[i];
}

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& config, const BackendOptions& options)
    : config_(config),
      max_rows_(std::max(1, options.max_tokens_per_pass)),
      pool_(options.num_threads),
      states_(config, options.num_slots) {}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(std::shared_ptr<const Model> model,
                                                               const BackendOptions& options) {
  if (options.num_slots <= 0) return absl::InvalidArgumentError("num_slots must be positive");
  const ModelConfig& c = model->config;
  const DType dtype = ResolveWeightDType(*model, options);
  const Checkpoint* checkpoint = model->checkpoint.get();
  // Our pool already uses every core; OpenBLAS's own threads would oversubscribe them.
  openblas_set_num_threads(1);

  auto backend = std::unique_ptr<CpuBackend>(new CpuBackend(c, options));
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank;
  for (const LayerWeights& w : model->layers) {
    Layer l;
    l.norm = ToF32(w.norm);
    l.in_proj = WeightMatrix::FromTensor(*w.in_proj, 2 * E, D, dtype, checkpoint);
    l.in_proj_bias = ToF32(w.in_proj_bias);
    l.conv_weight = ToF32(w.conv1d);
    l.conv_bias = ToF32(w.conv1d_bias);
    l.x_proj = WeightMatrix::FromTensor(*w.x_proj, R + 2 * N, E, dtype, checkpoint);
    l.dt_proj = WeightMatrix::FromTensor(*w.dt_proj, E, R, dtype, checkpoint);
    l.dt_bias = ToF32(w.dt_proj_bias);
    std::vector<float> a_log = ToF32(w.a_log);
    l.a.resize(a_log.size());
    for (size_t i = 0; i < a_log.size(); ++i)
      l.a[i] = static_cast<float>(-std::exp(double{a_log[i]}));
    l.d = ToF32(w.d);
    l.out_proj = WeightMatrix::FromTensor(*w.out_proj, D, E, dtype, checkpoint);
    l.out_proj_bias = ToF32(w.out_proj_bias);
    backend->layers_.push_back(std::move(l));
  }
  backend->embeddings_ =
      WeightMatrix::FromTensor(*model->embeddings, c.vocab_size, D, dtype, checkpoint);
  backend->norm_f_ = ToF32(model->norm_f);
  backend->tied_ = model->lm_head == model->embeddings;
  if (!backend->tied_)
    backend->lm_head_ =
        WeightMatrix::FromTensor(*model->lm_head, c.vocab_size, D, dtype, checkpoint);

  const size_t rows = static_cast<size_t>(backend->max_rows_);
  backend->pass_tokens_.resize(rows);
  backend->residual_.resize(rows * D);
  backend->hidden_.resize(rows * D);
  backend->xz_.resize(rows * 2 * E);
  backend->x_conv_.resize(rows * E);
  backend->x_dbl_.resize(rows * (R + 2 * N));
  backend->dt_.resize(rows * E);
  backend->y_.resize(rows * E);
  backend->final_.resize(rows * D);
  return backend;
}

BackendInfo CpuBackend::info() const {
  BackendInfo info;
  info.name = "cpu";
  info.device =
      absl::StrCat(pool_.num_threads(), " threads, OpenBLAS ", BlasCoreName(), " kernels");
  info.weight_dtype = embeddings_.dtype();
  info.num_slots = states_.num_slots();
  info.state_bytes_per_slot = config_.state_bytes();
  int64_t weight_bytes = embeddings_.bytes() + (tied_ ? 0 : lm_head_.bytes());
  for (const Layer& l : layers_) {
    weight_bytes += l.in_proj.bytes() + l.x_proj.bytes() + l.dt_proj.bytes() + l.out_proj.bytes();
    weight_bytes +=
        4 * static_cast<int64_t>(l.norm.size() + l.in_proj_bias.size() + l.conv_weight.size() +
                                 l.conv_bias.size() + l.dt_bias.size() + l.a.size() + l.d.size() +
                                 l.out_proj_bias.size());
  }
  info.weight_bytes = weight_bytes;
  info.state_pool_bytes = states_.bytes();
  info.max_rows_per_pass = static_cast<int>(max_rows_);
  return info;
}

absl::Status CpuBackend::ResetSlot(int slot) {
  RETURN_IF_ERROR(states_.CheckSlot(slot));
  states_.Reset(slot);
  return absl::OkStatus();
}
absl::Status CpuBackend::ReadSlot(int slot, std::span<uint8_t> out) {
  return states_.Read(slot, out);
}
absl::Status CpuBackend::WriteSlot(int slot, std::span<const uint8_t> in) {
  return states_.Write(slot, in);
}

absl::Status CpuBackend::Forward(const Step& step, StepOutput* out) {
  RETURN_IF_ERROR(ValidateStep(step, states_.num_slots(), config_.vocab_size));
  PrepareStepOutput(step, config_.vocab_size, out);
  return ForEachPass(step, max_rows_, pass_tokens_.data(),
                     [&](const std::vector<Chunk>& chunks, int64_t rows) {
                       RunPass(chunks, rows, out);
                       return absl::OkStatus();
                     });
}

void CpuBackend::RunPass(const std::vector<Chunk>& chunks, int64_t rows, StepOutput* out) {
  const int64_t D = config_.d_model;
  for (const Chunk& ch : chunks)
    if (ch.start_fresh) states_.Reset(ch.slot);
  for (int64_t r = 0; r < rows; ++r)
    embeddings_.RowToF32(pass_tokens_[r], residual_.data() + r * D);

  for (size_t i = 0; i < layers_.size(); ++i)
    RunLayer(layers_[i], static_cast<int64_t>(i), chunks, rows);

  // Final norm and lm_head only for the rows whose logits are wanted, written straight into the
  // caller's rows (consecutive within a pass: see ForEachPass).
  int64_t n_final = 0;
  int64_t first_out_row = -1;
  for (const Chunk& ch : chunks) {
    if (ch.logits_rows == 0) continue;
    cpu::RmsNormRows(residual_.data() + (ch.row_begin + ch.len - ch.logits_rows) * D, D,
                     norm_f_.data(), final_.data() + n_final * D, D, ch.logits_rows, D,
                     static_cast<float>(config_.layer_norm_epsilon));
    if (first_out_row < 0) first_out_row = ch.out_row;
    n_final += ch.logits_rows;
  }
  if (n_final == 0) return;
  const WeightMatrix& head = tied_ ? embeddings_ : lm_head_;
  head.MatMul(final_.data(), D, n_final,
              out->logits.data() + static_cast<size_t>(first_out_row) * config_.vocab_size,
              config_.vocab_size, pool_);
  // Each sequence's greedy token (a pass over its vocab-sized row), sequences split over threads.
  pool_.ParallelFor(static_cast<int64_t>(chunks.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Chunk& ch = chunks[i];
      if (ch.emits_logits) out->argmax[ch.sequence] = GreedyToken(out->Row(ch.sequence));
    }
  });
}

void CpuBackend::RunLayer(const Layer& l, int64_t layer_index, const std::vector<Chunk>& chunks,
                          int64_t rows) {
  const ModelConfig& c = config_;
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  const int64_t ld_dbl = R + 2 * N;

  cpu::RmsNormRows(residual_.data(), D, l.norm.data(), hidden_.data(), D, rows, D,
                   static_cast<float>(c.layer_norm_epsilon));
  l.in_proj.MatMul(hidden_.data(), D, rows, xz_.data(), 2 * E, pool_);  // xz: [rows][2E]
  AddBias(xz_.data(), rows, 2 * E, l.in_proj_bias);

  // Conv over each chunk with its slot's conv state; channels split across threads.
  pool_.ParallelFor(E, [&](int64_t c0, int64_t c1) {
    for (const Chunk& ch : chunks) {
      cpu::CausalConv1dSilu(xz_.data() + ch.row_begin * 2 * E, 2 * E, ch.len, l.conv_weight.data(),
                            l.conv_bias.empty() ? nullptr : l.conv_bias.data(), K,
                            states_.conv(ch.slot, layer_index), x_conv_.data() + ch.row_begin * E,
                            E, c0, c1);
    }
  });

  l.x_proj.MatMul(x_conv_.data(), E, rows, x_dbl_.data(), ld_dbl, pool_);  // [rows][R+2N]
  if (c.model_type == ModelType::kFalconMamba) {
    // Falcon-Mamba normalises dt_low, B and C separately (weightless RMSNorm).
    const float eps = static_cast<float>(c.mixer_rms_eps);
    cpu::RmsNormRows(x_dbl_.data(), ld_dbl, nullptr, x_dbl_.data(), ld_dbl, rows, R, eps);
    cpu::RmsNormRows(x_dbl_.data() + R, ld_dbl, nullptr, x_dbl_.data() + R, ld_dbl, rows, N, eps);
    cpu::RmsNormRows(x_dbl_.data() + R + N, ld_dbl, nullptr, x_dbl_.data() + R + N, ld_dbl, rows, N,
                     eps);
  }
  l.dt_proj.MatMul(x_dbl_.data(), ld_dbl, rows, dt_.data(), E, pool_);  // [rows][E]
  pool_.ParallelFor(rows, [&](int64_t r0, int64_t r1) {
    cpu::SoftplusWithBias(dt_.data() + r0 * E, l.dt_bias.data(), r1 - r0, E);
  });

  pool_.ParallelFor(E, [&](int64_t c0, int64_t c1) {
    for (const Chunk& ch : chunks) {
      const int64_t r0 = ch.row_begin;
      cpu::SelectiveScan(x_conv_.data() + r0 * E, dt_.data() + r0 * E,
                         x_dbl_.data() + r0 * ld_dbl + R, x_dbl_.data() + r0 * ld_dbl + R + N,
                         ld_dbl, l.a.data(), l.d.data(), xz_.data() + r0 * 2 * E + E, 2 * E, ch.len,
                         E, N, states_.ssm(ch.slot, layer_index), y_.data() + r0 * E, c0, c1);
    }
  });

  l.out_proj.MatMul(y_.data(), E, rows, hidden_.data(), D, pool_);  // [rows][D]
  AddBias(hidden_.data(), rows, D, l.out_proj_bias);
  for (int64_t i = 0; i < rows * D; ++i) residual_[i] += hidden_[i];
}

}  // namespace mambaserve
