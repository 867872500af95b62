// The CUDA implementation of Backend: weights uploaded once (f32 or bf16 GEMM operands, fp32
// everything else), a device StatePool of fixed-size slots in the portable layout, activation
// scratch for one pass of max_tokens_per_pass rows, cuBLAS (or the skinny GEMM kernel at batch
// <= 8) for the projections, the kernels of kernels/ for everything else, and CUDA Graphs for
// decode steps. Lives in libmambaserve_cuda.so; the server reaches it through engine/cuda_module.h.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/pinned_host_memory.h"
#include "engine/backend/step_plan.h"
#include "kernels/causal_conv1d.h"
#include "kernels/kernel_types.h"

namespace mambaserve {

class CudaBackend final : public Backend {
 public:
  // Uploads `model`'s weights. Errors (out of memory, unsupported shapes) name the sizes involved.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(std::shared_ptr<const Model> model,
                                                             const BackendOptions& options);
  // A model of `config`'s shapes with deterministic random weights generated on the device in
  // `weight_dtype` (benchmarks: a 7B-shaped model without 14 GB of host work).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> CreateRandom(const ModelConfig& config,
                                                                   DType weight_dtype,
                                                                   const BackendOptions& options,
                                                                   uint64_t seed);
  ~CudaBackend() override;

  const ModelConfig& config() const override { return config_; }
  BackendInfo info() const override;
  absl::Status Forward(const Step& step, StepOutput* out) override;
  absl::Status ResetSlot(int slot) override;
  absl::Status ReadSlot(int slot, std::span<uint8_t> out) override;
  absl::Status WriteSlot(int slot, std::span<const uint8_t> in) override;

  // Decode steps (every sequence one token) replay a CUDA Graph captured per batch-size bucket.
  // On by default; MAMBASERVE_CUDA_GRAPHS=0 turns it off.
  void set_use_graphs(bool on) { use_graphs_ = on; }
  // GEMMs with at most 8 rows use the skinny GEMM kernel instead of cuBLAS. On by default;
  // MAMBASERVE_CUDA_SKINNY_GEMM=0 turns it off. Graphs captured before a change are dropped.
  void set_use_skinny_gemm(bool on);

  struct Stats {
    int64_t eager_passes = 0;
    int64_t graph_replays = 0;
    int64_t graph_captures = 0;
    int64_t logits_rows_downloaded = 0;  // token_only rows are not counted: only their argmax moves
    // lm_head GEMMs (+ argmax) launched outside a graph: replayed decode steps of up to 256 rows
    // have them inside.
    int64_t eager_lm_head_groups = 0;
  };
  const Stats& stats() const { return stats_; }
  // Set when num_slots was clamped to what fits in device memory.
  const std::string& sizing_note() const { return sizing_note_; }
  // Batch sizes a decode step is padded to when replayed as a graph.
  static int GraphBucket(int rows);

 private:
  struct Matrix {
    void* data = nullptr;  // [rows][cols] row-major in gemm_type_
    int64_t rows = 0;
    int64_t cols = 0;
  };
  struct Layer {
    float* norm = nullptr;           // [D]
    Matrix in_proj;                  // [2E][D]
    float* in_proj_bias = nullptr;   // [2E] or null
    float* conv_weight = nullptr;    // [E][K]
    float* conv_bias = nullptr;      // [E] or null
    Matrix x_proj;                   // [R+2N][E]
    Matrix dt_proj;                  // [E][R]
    float* dt_bias = nullptr;        // [E]
    float* a = nullptr;              // [E][N] = -exp(A_log)
    float* d = nullptr;              // [E]
    Matrix out_proj;                 // [D][E]
    float* out_proj_bias = nullptr;  // [D] or null
  };
  using Chunk = PassChunk;
  // Host mirror of the per-pass metadata block (pinned), uploaded in one copy.
  struct MetaLayout {
    // int32 offsets. [0, upload) goes to the device before a pass; [argmax, total) comes back.
    int64_t tokens, row_begin, len, slot, fresh, logit_rows, logit_count, upload, argmax, total;
  };

  CudaBackend(const ModelConfig& config, const BackendOptions& options, DType weight_dtype);
  absl::Status Init(int device);
  absl::Status AllocateWeights(bool has_in_bias, bool has_conv_bias, bool has_out_bias, bool tied);
  absl::Status UploadWeights(const Model& model);
  absl::Status FillRandomWeights(uint64_t seed);
  absl::Status AllocateScratchAndPool();
  absl::Status CheckSlot(int slot) const;

  absl::Status RunPass(const std::vector<Chunk>& chunks, int64_t rows, StepOutput* out);
  absl::Status EnqueuePassAndWait(const std::vector<Chunk>& chunks, int64_t rows, StepOutput* out);
  // One packed pass: `rows` rows in `num_chunks` chunks (their table is in the step metadata).
  struct PassShape {
    int64_t rows = 0;
    int num_chunks = 0;
    int max_chunk_len = 0;  // the longest chunk, for launchers that pick a mapping by length
    bool decode = false;    // every chunk one token: the single-token kernels
  };
  // A decode pass of `rows` one-token chunks (a graph bucket's shape).
  static PassShape DecodePass(int rows) { return {rows, rows, 1, true}; }
  // Enqueues embedding, every layer and norm_f (gathering the logits rows) for the pass.
  absl::Status EnqueueForward(const PassShape& pass, int64_t logit_rows_bound);
  absl::Status EnqueueLayer(const Layer& layer, int64_t index, const PassShape& pass);
  // What the skinny GEMM of a decode pass does besides the product (see SkinnyGemmParams).
  struct SkinnyExtras {
    // Runs this conv update on y's first conv.d_inner columns instead of writing them.
    const kernels::CausalConv1dParams* fused_conv = nullptr;
    // x is fp32: RMS-normalised per row (Falcon-Mamba's dt_low) when asked, rounded to the
    // weight dtype in the kernel.
    bool x_f32 = false;
    bool rms_normalize_x = false;
    bool any() const { return fused_conv != nullptr || x_f32 || rms_normalize_x; }
  };
  // y = x · wᵀ with x in the weight dtype: the skinny GEMM for up to 8 rows (UsesSkinnyGemm),
  // else cuBLAS, which takes no extras.
  absl::Status Gemm(const Matrix& w, const void* x, int64_t ldx, int64_t rows, float* y,
                    int64_t ldy, const SkinnyExtras& extras);
  absl::Status Gemm(const Matrix& w, const void* x, int64_t ldx, int64_t rows, float* y,
                    int64_t ldy) {
    return Gemm(w, x, ldx, rows, y, ldy, SkinnyExtras{});
  }
  bool UsesSkinnyGemm(int64_t rows) const;
  // lm_head over rows [g0, g0 + count) of final_ into logits_, and each row's greedy token into
  // the step metadata.
  absl::Status EnqueueLogits(int g0, int count);
  // Whether a decode graph of `bucket` rows also runs lm_head and argmax for all of them (the
  // logits scratch holds that many rows), so a replay launches nothing else but copies.
  bool GraphIncludesLogits(int bucket) const;
  // Copies logits rows [g0, g0 + count) of the pass (in logits_) to `out`, except token_only ones.
  absl::Status DownloadLogitsRows(StepOutput& out, int g0, int count, int first_out_row);
  absl::Status ReplayDecodeGraph(int bucket);
  void DropGraphs();

  kernels::ChunkTable DeviceChunks(const PassShape& pass) const;
  float* ConvState(int64_t layer) const;
  float* SsmState(int64_t layer) const;

  ModelConfig config_;
  BackendOptions options_;
  DType weight_dtype_;
  kernels::GemmType gemm_type_;
  int max_rows_;
  int logits_rows_;  // rows per lm_head GEMM (bounds the logits scratch)
  bool use_graphs_ = true;
  bool use_skinny_gemm_ = true;

  int device_ = 0;
  std::string device_name_;
  int64_t device_total_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  // One allocation each for weights, scratch and the state pool: OOM shows up at load, once.
  void* weight_arena_ = nullptr;
  int64_t weight_bytes_ = 0;
  void* scratch_arena_ = nullptr;
  int64_t scratch_bytes_ = 0;
  float* state_pool_ = nullptr;  // [slots][conv floats + ssm floats]
  int num_slots_ = 0;
  std::string sizing_note_;

  std::vector<Layer> layers_;
  Matrix embeddings_;  // [V][D]
  Matrix lm_head_;     // [V][D]; aliases embeddings_ when tied
  float* norm_f_ = nullptr;

  // Scratch, [max_rows_][...] each.
  float* residual_ = nullptr;    // [rows][D]
  void* hidden_ = nullptr;       // [rows][D] GEMM dtype
  float* xz_ = nullptr;          // [rows][2E]
  float* x_conv_ = nullptr;      // [rows][E]
  void* x_conv_gemm_ = nullptr;  // [rows][E] GEMM dtype (== x_conv_ for f32)
  float* x_dbl_ = nullptr;       // [rows][R+2N]
  void* dt_low_ = nullptr;       // [rows][R] GEMM dtype (== x_dbl_ with ld R+2N for f32)
  int64_t ld_dt_low_ = 0;
  float* dt_ = nullptr;      // [rows][E]
  void* y_ = nullptr;        // [rows][E] GEMM dtype
  float* delta_ = nullptr;   // [rows][D] out_proj output
  void* final_ = nullptr;    // [rows][D] GEMM dtype, norm_f rows that emit logits
  float* logits_ = nullptr;  // [logits_rows_][V]
  void* cublas_workspace_ = nullptr;
  int64_t cublas_workspace_bytes_ = 0;
  int32_t* meta_device_ = nullptr;
  int32_t* meta_host_ = nullptr;  // pinned
  // The skinny GEMM's split-K scratch (x_proj): partial sums and per-column-pair counters.
  float* split_k_partials_ = nullptr;
  unsigned* split_k_counters_ = nullptr;
  int64_t split_k_max_columns_ = 0;  // the widest product the scratch serves
  // Where the callers' logits buffers move to (see Forward).
  std::shared_ptr<PinnedHostMemory> logits_memory_ = std::make_shared<PinnedHostMemory>();
  MetaLayout meta_;
  std::vector<const Chunk*> emitting_chunks_;  // the running pass's, by logits row

  std::map<int, cudaGraphExec_t> graphs_;  // decode graphs by bucket size
  Stats stats_;
};

}  // namespace mambaserve
