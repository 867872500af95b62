#include "engine/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/cuda/cuda_status.h"
#include "engine/backend/step_plan.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"
#include "kernels/argmax.h"
#include "kernels/bcdt_rms_norm.h"
#include "kernels/causal_conv1d.h"
#include "kernels/embedding.h"
#include "kernels/fill_random.h"
#include "kernels/launch_options.h"
#include "kernels/mamba_math.h"
#include "kernels/rms_norm.h"
#include "kernels/selective_scan.h"
#include "kernels/skinny_gemm.h"

namespace mambaserve {
namespace {

using cuda::CublasStatus;
using cuda::CudaStatus;
using cuda::LaunchStatus;
using kernels::GemmType;

constexpr int64_t kAlign =
    256;  // cudaMalloc's own alignment: keeps every sub-buffer vector-aligned
constexpr int64_t kMiB = 1 << 20;
// cuBLAS needs a fixed workspace to be capturable in a graph; 32 MiB is what it asks for on Hopper.
constexpr int64_t kCublasWorkspaceBytes = 32 * kMiB;
// Device memory kept free beyond the pool: instantiated graphs, cuBLAS's internal buffers and
// the context's own growth.
constexpr int64_t kHeadroomBytes = 256 * kMiB;
// lm_head rows per GEMM: bounds the logits scratch to 256 * V floats (64 MiB for Falcon-Mamba).
constexpr int kMaxLogitsRowsPerGemm = 256;
// Skinny GEMMs with fewer column pairs than this and a k of at least kSplitKMinK (x_proj: 144
// pairs, k = d_inner) split k over kSplitKBlocks blocks per pair, so enough blocks stream it.
constexpr int64_t kSplitKMaxColumnPairs = 512;
constexpr int64_t kSplitKMinK = 1024;
constexpr int kSplitKBlocks = 4;

int64_t AlignUp(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

std::string Bytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30))
    return absl::StrFormat("%.2f GiB", bytes / double(int64_t{1} << 30));
  return absl::StrFormat("%.1f MiB", bytes / double(kMiB));
}

bool EnvDisabled(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0);
}

// Sequential sub-allocation of one device arena. Run once with base == nullptr to size it.
class ArenaLayout {
 public:
  explicit ArenaLayout(char* base) : base_(base) {}
  template <typename T>
  T* Take(int64_t bytes) {
    offset_ = AlignUp(offset_);
    T* p = base_ != nullptr ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += bytes;
    return p;
  }
  int64_t size() const { return AlignUp(offset_); }

 private:
  char* base_;
  int64_t offset_ = 0;
};

cudaDataType_t CudaType(GemmType t) { return t == GemmType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

}  // namespace

CudaBackend::CudaBackend(const ModelConfig& config, const BackendOptions& options,
                         DType weight_dtype)
    : config_(config),
      options_(options),
      weight_dtype_(weight_dtype),
      gemm_type_(weight_dtype == DType::kBF16 ? GemmType::kBF16 : GemmType::kF32),
      max_rows_(std::max(1, options.max_tokens_per_pass)),
      logits_rows_(std::min(std::max(1, options.max_tokens_per_pass), kMaxLogitsRowsPerGemm)),
      use_graphs_(!EnvDisabled("MAMBASERVE_CUDA_GRAPHS")),
      use_skinny_gemm_(!EnvDisabled("MAMBASERVE_CUDA_SKINNY_GEMM")) {}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  DropGraphs();
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  if (meta_host_ != nullptr) cudaFreeHost(meta_host_);
  cudaFree(state_pool_);
  cudaFree(scratch_arena_);
  cudaFree(weight_arena_);
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(std::shared_ptr<const Model> model,
                                                                 const BackendOptions& options) {
  const ModelConfig& c = model->config;
  auto backend = std::unique_ptr<CudaBackend>(
      new CudaBackend(c, options, ResolveWeightDType(*model, options)));
  RETURN_IF_ERROR(backend->Init(options.gpu_device));
  const LayerWeights& l0 = model->layers.front();
  RETURN_IF_ERROR(backend->AllocateWeights(l0.in_proj_bias != nullptr, l0.conv1d_bias != nullptr,
                                           l0.out_proj_bias != nullptr,
                                           model->lm_head == model->embeddings));
  RETURN_IF_ERROR(backend->UploadWeights(*model));
  RETURN_IF_ERROR(backend->AllocateScratchAndPool());
  return backend;
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::CreateRandom(
    const ModelConfig& config, DType weight_dtype, const BackendOptions& options, uint64_t seed) {
  auto backend = std::unique_ptr<CudaBackend>(
      new CudaBackend(config, options, weight_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32));
  RETURN_IF_ERROR(backend->Init(options.gpu_device));
  RETURN_IF_ERROR(backend->AllocateWeights(config.use_bias, config.use_conv_bias, config.use_bias,
                                           config.tie_word_embeddings));
  RETURN_IF_ERROR(backend->FillRandomWeights(seed));
  RETURN_IF_ERROR(backend->AllocateScratchAndPool());
  return backend;
}

absl::Status CudaBackend::Init(int device) {
  const ModelConfig& c = config_;
  if (options_.num_slots <= 0) return absl::InvalidArgumentError("num_slots must be positive");
  if (c.n_layers < 1) return absl::InvalidArgumentError("model has no layers");
  if (c.d_conv < 2 || c.d_conv > math::kMaxConvWidth) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: conv kernel width ", c.d_conv,
                                                   " unsupported (2..", math::kMaxConvWidth, ")"));
  }
  if (c.d_state < 1 || c.d_state > math::kMaxStateSize) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: d_state ", c.d_state,
                                                   " unsupported (1..", math::kMaxStateSize, ")"));
  }
  if (c.d_model > 8192) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: hidden size ", c.d_model, " unsupported (at most 8192)"));
  }
  if (options_.max_tokens_per_pass > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: max_tokens_per_pass ",
                                                   options_.max_tokens_per_pass, " exceeds 65535"));
  }
  if (options_.gpu_memory_fraction <= 0.0 || options_.gpu_memory_fraction > 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_memory_fraction ", options_.gpu_memory_fraction, " must be in (0, 1]"));
  }
  int count = 0;
  MS_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_device ", device, " out of range: ", count, " device(s)"));
  }
  device_ = device;
  MS_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")"));
  cudaDeviceProp prop;
  MS_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  device_total_ = static_cast<int64_t>(prop.totalGlobalMem);
  // Hopper and later: each kernel's launch overlaps the previous kernel's tail (a decode step is
  // a few hundred short kernels). MAMBASERVE_CUDA_PDL=0 turns it off (for comparisons).
  kernels::SetProgrammaticDependentLaunch(prop.major >= 9 && !EnvDisabled("MAMBASERVE_CUDA_PDL"));
  device_name_ =
      absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ", ", Bytes(device_total_), ")");
  MS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                          "cudaStreamCreate");
  RETURN_IF_ERROR(CublasStatus(cublasCreate(&cublas_), "cublasCreate"));
  RETURN_IF_ERROR(CublasStatus(cublasSetStream(cublas_, stream_), "cublasSetStream"));
  return absl::OkStatus();
}

absl::Status CudaBackend::AllocateWeights(bool has_in_bias, bool has_conv_bias, bool has_out_bias,
                                          bool tied) {
  const ModelConfig& c = config_;
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv,
                V = c.vocab_size;
  const int64_t esize = kernels::GemmTypeSize(gemm_type_);
  layers_.assign(static_cast<size_t>(c.n_layers), Layer{});
  auto layout = [&](char* base) {
    ArenaLayout a(base);
    auto matrix = [&](int64_t rows, int64_t cols) {
      return Matrix{a.Take<void>(rows * cols * esize), rows, cols};
    };
    auto vec = [&](int64_t n) { return a.Take<float>(n * 4); };
    embeddings_ = matrix(V, D);
    for (Layer& l : layers_) {
      l.norm = vec(D);
      l.in_proj = matrix(2 * E, D);
      l.in_proj_bias = has_in_bias ? vec(2 * E) : nullptr;
      l.conv_weight = vec(E * K);
      l.conv_bias = has_conv_bias ? vec(E) : nullptr;
      l.x_proj = matrix(R + 2 * N, E);
      l.dt_proj = matrix(E, R);
      l.dt_bias = vec(E);
      l.a = vec(E * N);
      l.d = vec(E);
      l.out_proj = matrix(D, E);
      l.out_proj_bias = has_out_bias ? vec(D) : nullptr;
    }
    norm_f_ = vec(D);
    lm_head_ = tied ? embeddings_ : matrix(V, D);
    return a.size();
  };
  weight_bytes_ = layout(nullptr);
  size_t free_bytes = 0, total_bytes = 0;
  MS_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const cudaError_t err = cudaMalloc(&weight_arena_, static_cast<size_t>(weight_bytes_));
  if (err != cudaSuccess) {
    cudaGetLastError();
    weight_arena_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat(
        "CUDA backend: cannot allocate ", Bytes(weight_bytes_), " for the ",
        DTypeName(weight_dtype_), " weights on ", device_name_, ": ", Bytes(free_bytes),
        " free of ", Bytes(total_bytes), " (", cudaGetErrorString(err), ")"));
  }
  layout(static_cast<char*>(weight_arena_));
  return absl::OkStatus();
}

namespace {

// Copies `tensor` (any checkpoint dtype) into device memory as `type`, converting on the host in
// bounded pieces.
absl::Status UploadTensor(const TensorView& tensor, void* dst, GemmType type) {
  const int64_t n = tensor.numel();
  if (tensor.dtype == (type == GemmType::kBF16 ? DType::kBF16 : DType::kF32)) {
    return CudaStatus(cudaMemcpy(dst, tensor.data, tensor.nbytes, cudaMemcpyHostToDevice),
                      absl::StrCat("upload of ", tensor.name));
  }
  constexpr int64_t kPiece = 1 << 22;
  std::vector<float> f32(static_cast<size_t>(std::min(n, kPiece)));
  std::vector<uint16_t> bf16(type == GemmType::kBF16 ? f32.size() : 0);
  const size_t in_size = DTypeSize(tensor.dtype);
  for (int64_t i0 = 0; i0 < n; i0 += kPiece) {
    const int64_t count = std::min(kPiece, n - i0);
    ConvertToF32(tensor.dtype, tensor.data + i0 * in_size, static_cast<size_t>(count), f32.data());
    const void* src = f32.data();
    int64_t out_size = 4;
    if (type == GemmType::kBF16) {
      ConvertF32ToBf16(f32.data(), static_cast<size_t>(count), bf16.data());
      src = bf16.data();
      out_size = 2;
    }
    RETURN_IF_ERROR(CudaStatus(cudaMemcpy(static_cast<char*>(dst) + i0 * out_size, src,
                                          count * out_size, cudaMemcpyHostToDevice),
                               absl::StrCat("upload of ", tensor.name)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::UploadWeights(const Model& model) {
  auto vec = [](const TensorView* t, float* dst) -> absl::Status {
    if (t == nullptr || dst == nullptr) return absl::OkStatus();
    return UploadTensor(*t, dst, GemmType::kF32);
  };
  auto mat = [&](const TensorView* t, const Matrix& m) {
    return UploadTensor(*t, m.data, gemm_type_);
  };
  RETURN_IF_ERROR(mat(model.embeddings, embeddings_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LayerWeights& w = model.layers[i];
    Layer& l = layers_[i];
    RETURN_IF_ERROR(vec(w.norm, l.norm));
    RETURN_IF_ERROR(mat(w.in_proj, l.in_proj));
    RETURN_IF_ERROR(vec(w.in_proj_bias, l.in_proj_bias));
    RETURN_IF_ERROR(vec(w.conv1d, l.conv_weight));
    RETURN_IF_ERROR(vec(w.conv1d_bias, l.conv_bias));
    RETURN_IF_ERROR(mat(w.x_proj, l.x_proj));
    RETURN_IF_ERROR(mat(w.dt_proj, l.dt_proj));
    RETURN_IF_ERROR(vec(w.dt_proj_bias, l.dt_bias));
    // A = -exp(A_log), computed in double exactly as the CPU backend does.
    std::vector<float> a(static_cast<size_t>(w.a_log->numel()));
    ConvertToF32(w.a_log->dtype, w.a_log->data, a.size(), a.data());
    for (float& v : a) v = static_cast<float>(-std::exp(double{v}));
    MS_CUDA_RETURN_IF_ERROR(cudaMemcpy(l.a, a.data(), a.size() * 4, cudaMemcpyHostToDevice),
                            "upload of A");
    RETURN_IF_ERROR(vec(w.d, l.d));
    RETURN_IF_ERROR(mat(w.out_proj, l.out_proj));
    RETURN_IF_ERROR(vec(w.out_proj_bias, l.out_proj_bias));
  }
  RETURN_IF_ERROR(vec(model.norm_f, norm_f_));
  if (lm_head_.data != embeddings_.data) RETURN_IF_ERROR(mat(model.lm_head, lm_head_));
  // cudaMemcpy from pageable memory returns once the bytes are staged, not when they have landed,
  // and it runs on the legacy stream, which our non-blocking compute stream does not wait for:
  // wait for every upload here, before the first kernel can read a weight.
  MS_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize(), "weight upload");
  return absl::OkStatus();
}

absl::Status CudaBackend::FillRandomWeights(uint64_t seed) {
  const ModelConfig& c = config_;
  const double D = double(c.d_model), E = double(c.d_inner), R = double(c.dt_rank),
               K = double(c.d_conv);
  uint64_t counter = 0;
  auto fill = [&](void* out, GemmType type, int64_t count, kernels::FillKind kind, double mean,
                  double scale) -> absl::Status {
    if (out == nullptr) return absl::OkStatus();
    kernels::FillParams p;
    p.out = out;
    p.type = type;
    p.count = count;
    p.kind = kind;
    p.mean = static_cast<float>(mean);
    p.scale = static_cast<float>(scale);
    p.period = c.d_state;
    p.seed = seed * 0x9e3779b97f4a7c15ull + (++counter) * 0xbf58476d1ce4e5b9ull;
    return LaunchStatus(kernels::InvokeFill(p, stream_), "Fill");
  };
  using kernels::FillKind;
  auto mat = [&](const Matrix& m, double std) {
    return fill(m.data, gemm_type_, m.rows * m.cols, FillKind::kNormal, 0.0, std);
  };
  const GemmType f32 = GemmType::kF32;
  // Mamba's initialisation (engine/random_model.cc), dt ~ 0.01 * e^U(-1,1).
  const double dt_bias = 0.01 + std::log(-std::expm1(-0.01));
  RETURN_IF_ERROR(mat(embeddings_, 2.0 / std::sqrt(D)));
  for (Layer& l : layers_) {
    RETURN_IF_ERROR(fill(l.norm, f32, c.d_model, FillKind::kNormal, 1.0, 0.1));
    RETURN_IF_ERROR(mat(l.in_proj, 1.0 / std::sqrt(D)));
    RETURN_IF_ERROR(fill(l.in_proj_bias, f32, 2 * c.d_inner, FillKind::kNormal, 0.0, 0.02));
    RETURN_IF_ERROR(fill(l.conv_weight, f32, c.d_inner * c.d_conv, FillKind::kUniform, 0.0,
                         1.0 / std::sqrt(K)));
    RETURN_IF_ERROR(fill(l.conv_bias, f32, c.d_inner, FillKind::kUniform, 0.0, 1.0 / std::sqrt(K)));
    RETURN_IF_ERROR(mat(l.x_proj, 1.0 / std::sqrt(E)));
    RETURN_IF_ERROR(fill(l.dt_proj.data, gemm_type_, l.dt_proj.rows * l.dt_proj.cols,
                         FillKind::kUniform, 0.0, 1.0 / std::sqrt(R)));
    RETURN_IF_ERROR(fill(l.dt_bias, f32, c.d_inner, FillKind::kUniform, dt_bias, 1.0));
    RETURN_IF_ERROR(fill(l.a, f32, c.d_inner * c.d_state, FillKind::kNegArange, 0.0, 0.0));
    RETURN_IF_ERROR(fill(l.d, f32, c.d_inner, FillKind::kUniform, 1.0, 0.0));
    RETURN_IF_ERROR(mat(l.out_proj, 1.0 / std::sqrt(E)));
    RETURN_IF_ERROR(fill(l.out_proj_bias, f32, c.d_model, FillKind::kNormal, 0.0, 0.02));
  }
  RETURN_IF_ERROR(fill(norm_f_, f32, c.d_model, FillKind::kNormal, 1.0, 0.1));
  if (lm_head_.data != embeddings_.data) RETURN_IF_ERROR(mat(lm_head_, 2.0 / std::sqrt(D)));
  return CudaStatus(cudaStreamSynchronize(stream_), "random weight fill");
}

absl::Status CudaBackend::AllocateScratchAndPool() {
  const ModelConfig& c = config_;
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
  const int64_t rows = max_rows_;
  const int64_t esize = kernels::GemmTypeSize(gemm_type_);
  const bool f32 = gemm_type_ == GemmType::kF32;
  const int64_t ld_dbl = R + 2 * N;
  // Split-K scratch for products up to x_proj's width: its partial sums, one counter per column
  // pair.
  split_k_max_columns_ = ld_dbl;
  const int64_t split_k_counter_bytes = (split_k_max_columns_ + 1) / 2 * 4;
  // GEMM-input activations, in the weight dtype (one precision policy for every pass size).
  const int64_t act_rows_bytes = rows * esize;
  meta_.tokens = 0;
  meta_.row_begin = rows;
  meta_.len = 2 * rows;
  meta_.slot = 3 * rows;
  meta_.fresh = 4 * rows;
  meta_.logit_rows = 5 * rows;
  meta_.logit_count = 6 * rows;
  meta_.upload = 6 * rows + 1;
  meta_.argmax = meta_.upload;
  meta_.total = meta_.argmax + rows;

  auto layout = [&](char* base) {
    ArenaLayout a(base);
    residual_ = a.Take<float>(rows * D * 4);
    hidden_ = a.Take<void>(act_rows_bytes * D);
    xz_ = a.Take<float>(rows * 2 * E * 4);
    x_conv_ = a.Take<float>(rows * E * 4);
    x_conv_gemm_ = f32 ? static_cast<void*>(x_conv_) : a.Take<void>(rows * E * esize);
    x_dbl_ = a.Take<float>(rows * ld_dbl * 4);
    dt_low_ = f32 ? static_cast<void*>(x_dbl_) : a.Take<void>(rows * R * esize);
    ld_dt_low_ = f32 ? ld_dbl : R;
    dt_ = a.Take<float>(rows * E * 4);
    y_ = a.Take<void>(act_rows_bytes * E);
    delta_ = a.Take<float>(rows * D * 4);
    final_ = a.Take<void>(act_rows_bytes * D);
    logits_ = a.Take<float>(int64_t{logits_rows_} * V * 4);
    cublas_workspace_ = a.Take<void>(kCublasWorkspaceBytes);
    split_k_partials_ = a.Take<float>(int64_t{kSplitKBlocks} * kernels::kSkinnyGemmMaxRows *
                                      split_k_max_columns_ * 4);
    split_k_counters_ = a.Take<unsigned>(split_k_counter_bytes);
    meta_device_ = a.Take<int32_t>(meta_.total * 4);
    return a.size();
  };
  scratch_bytes_ = layout(nullptr);
  cublas_workspace_bytes_ = kCublasWorkspaceBytes;
  cudaError_t err = cudaMalloc(&scratch_arena_, static_cast<size_t>(scratch_bytes_));
  if (err != cudaSuccess) {
    cudaGetLastError();
    scratch_arena_ = nullptr;
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA backend: cannot allocate ", Bytes(scratch_bytes_),
                     " of activation scratch for max_tokens_per_pass ", rows, " after ",
                     Bytes(weight_bytes_), " of weights on ", device_name_, " (",
                     cudaGetErrorString(err), "); lower max_tokens_per_pass"));
  }
  layout(static_cast<char*>(scratch_arena_));
  RETURN_IF_ERROR(
      CublasStatus(cublasSetWorkspace(cublas_, cublas_workspace_, cublas_workspace_bytes_),
                   "cublasSetWorkspace"));
  MS_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&meta_host_), meta_.total * 4),
                          "cudaMallocHost (step metadata)");
  // Split-K counters start at zero; each launch leaves them so.
  MS_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(split_k_counters_, 0, static_cast<size_t>(split_k_counter_bytes), stream_),
      "split-K counters");

  // The state pool takes what the weights and scratch leave under gpu_memory_fraction of the
  // device (other processes' use counts against it), minus headroom; num_slots is clamped to fit.
  size_t free_bytes = 0, total_bytes = 0;
  MS_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const int64_t slot_bytes = c.state_bytes();
  const int64_t cap =
      static_cast<int64_t>(static_cast<double>(total_bytes) * options_.gpu_memory_fraction);
  const int64_t used = static_cast<int64_t>(total_bytes - free_bytes);
  const int64_t budget = std::min(cap - used, static_cast<int64_t>(free_bytes) - kHeadroomBytes);
  const int64_t fit = budget > 0 ? budget / slot_bytes : 0;
  if (fit < 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA backend: no room for a single state slot (", Bytes(slot_bytes), ") on ",
                     device_name_, ": weights ", Bytes(weight_bytes_), " + scratch ",
                     Bytes(scratch_bytes_), " leave ", Bytes(free_bytes), " free, and ",
                     "gpu_memory_fraction ", options_.gpu_memory_fraction, " allows ", Bytes(cap),
                     " in use of ", Bytes(total_bytes), " (", Bytes(used), " in use now)"));
  }
  num_slots_ = static_cast<int>(std::min<int64_t>(options_.num_slots, fit));
  if (num_slots_ < options_.num_slots) {
    sizing_note_ = absl::StrCat("num_slots ", options_.num_slots, " x ", Bytes(slot_bytes),
                                " does not fit in ", Bytes(std::max<int64_t>(budget, 0)),
                                " left under gpu_memory_fraction ", options_.gpu_memory_fraction,
                                "; clamped to ", num_slots_, " slots");
    LogWarning("CUDA backend: ", sizing_note_);
  }
  const int64_t pool_bytes = int64_t{num_slots_} * slot_bytes;
  err = cudaMalloc(reinterpret_cast<void**>(&state_pool_), static_cast<size_t>(pool_bytes));
  if (err != cudaSuccess) {
    cudaGetLastError();
    state_pool_ = nullptr;
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA backend: cannot allocate the state pool: ", num_slots_, " slots x ",
                     Bytes(slot_bytes), " = ", Bytes(pool_bytes), " on ", device_name_, " (",
                     cudaGetErrorString(err), ")"));
  }
  MS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(state_pool_, 0, static_cast<size_t>(pool_bytes), stream_),
                          "state pool zeroing");
  return CudaStatus(cudaStreamSynchronize(stream_), "state pool zeroing");
}

BackendInfo CudaBackend::info() const {
  BackendInfo info;
  info.name = "cuda";
  info.device = device_name_;
  info.weight_dtype = weight_dtype_;
  info.num_slots = num_slots_;
  info.state_bytes_per_slot = config_.state_bytes();
  info.weight_bytes = weight_bytes_;
  info.state_pool_bytes = int64_t{num_slots_} * config_.state_bytes();
  info.max_rows_per_pass = static_cast<int>(max_rows_);
  info.device_memory_total = device_total_;
  return info;
}

void CudaBackend::set_use_skinny_gemm(bool on) {
  if (on != use_skinny_gemm_) DropGraphs();
  use_skinny_gemm_ = on;
}

void CudaBackend::DropGraphs() {
  for (auto& [bucket, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

int CudaBackend::GraphBucket(int rows) {
  // Powers of two to 8 (the skinny GEMM's row counts), then steps of 8 to 128, 16 to 256 and 32
  // beyond: padding stays under max(7, rows/8), with at most 35 graphs up to 512 rows.
  if (rows <= 8) {
    int b = 1;
    while (b < rows) b <<= 1;
    return b;
  }
  const int step = rows <= 128 ? 8 : rows <= 256 ? 16 : 32;
  return (rows + step - 1) / step * step;
}

absl::Status CudaBackend::CheckSlot(int slot) const {
  if (slot < 0 || slot >= num_slots_) {
    return absl::OutOfRangeError(
        absl::StrCat("state slot ", slot, " out of range [0, ", num_slots_, ")"));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ResetSlot(int slot) {
  RETURN_IF_ERROR(CheckSlot(slot));
  MS_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
  const int64_t bytes = config_.state_bytes();
  MS_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(reinterpret_cast<char*>(state_pool_) + slot * bytes, 0, bytes, stream_),
      "ResetSlot");
  return CudaStatus(cudaStreamSynchronize(stream_), "ResetSlot");
}

absl::Status CudaBackend::ReadSlot(int slot, std::span<uint8_t> out) {
  RETURN_IF_ERROR(CheckSlot(slot));
  MS_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
  const int64_t bytes = config_.state_bytes();
  if (static_cast<int64_t>(out.size()) != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("state buffer is ", out.size(), " bytes, slot holds ", bytes));
  }
  // The device slot is already in the portable layout (conv [L][E][K-1], then ssm [L][E][N], fp32).
  MS_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out.data(), reinterpret_cast<char*>(state_pool_) + slot * bytes, bytes,
                      cudaMemcpyDeviceToHost, stream_),
      "ReadSlot");
  return CudaStatus(cudaStreamSynchronize(stream_), "ReadSlot");
}

absl::Status CudaBackend::WriteSlot(int slot, std::span<const uint8_t> in) {
  RETURN_IF_ERROR(CheckSlot(slot));
  MS_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
  const int64_t bytes = config_.state_bytes();
  if (static_cast<int64_t>(in.size()) != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("state blob is ", in.size(), " bytes, slot holds ", bytes));
  }
  MS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(reinterpret_cast<char*>(state_pool_) + slot * bytes,
                                          in.data(), bytes, cudaMemcpyHostToDevice, stream_),
                          "WriteSlot");
  return CudaStatus(cudaStreamSynchronize(stream_), "WriteSlot");
}

absl::Status CudaBackend::Forward(const Step& step, StepOutput* out) {
  RETURN_IF_ERROR(ValidateStep(step, num_slots_, config_.vocab_size));
  // The scheduler thread may not be the one that created the backend: the current device is
  // per thread.
  MS_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
  // The caller's logits buffer moves to page-locked memory once (the scheduler reuses its
  // StepOutput), so logits rows come back at the bus rate, as one DMA each.
  if (out->logits.get_allocator().memory != logits_memory_) {
    out->logits = LogitsBuffer(UninitializedAllocator<float>(logits_memory_));
  }
  PrepareStepOutput(step, config_.vocab_size, out);
  return ForEachPass(
      step, max_rows_, meta_host_ + meta_.tokens,
      [&](const std::vector<Chunk>& chunks, int64_t rows) { return RunPass(chunks, rows, out); });
}

kernels::ChunkTable CudaBackend::DeviceChunks(const PassShape& pass) const {
  kernels::ChunkTable t;
  t.row_begin = meta_device_ + meta_.row_begin;
  t.len = meta_device_ + meta_.len;
  t.slot = meta_device_ + meta_.slot;
  t.fresh = meta_device_ + meta_.fresh;
  t.num_chunks = pass.num_chunks;
  t.max_len = pass.max_chunk_len;
  return t;
}

float* CudaBackend::ConvState(int64_t layer) const {
  return state_pool_ + layer * config_.d_inner * (config_.d_conv - 1);
}

float* CudaBackend::SsmState(int64_t layer) const {
  return state_pool_ + config_.conv_state_floats() + layer * config_.d_inner * config_.d_state;
}

absl::Status CudaBackend::RunPass(const std::vector<Chunk>& chunks, int64_t rows, StepOutput* out) {
  absl::Status status = EnqueuePassAndWait(chunks, rows, out);
  // After a failure, work already queued may still read the pinned step metadata that the next
  // pass rewrites: drain the stream first (its own error, if any, is already in `status`).
  if (!status.ok()) (void)cudaStreamSynchronize(stream_);
  return status;
}

absl::Status CudaBackend::EnqueuePassAndWait(const std::vector<Chunk>& chunks, int64_t rows,
                                             StepOutput* out) {
  const int num_chunks = static_cast<int>(chunks.size());
  const bool decode = static_cast<int64_t>(chunks.size()) == rows;  // every chunk one token
  int32_t* m = meta_host_;
  int n_logits = 0;
  int first_out_row = -1;
  int max_chunk_len = 0;
  std::vector<const Chunk*>& emitting = emitting_chunks_;
  emitting.clear();
  for (int i = 0; i < num_chunks; ++i) {
    const Chunk& ch = chunks[i];
    m[meta_.row_begin + i] = static_cast<int32_t>(ch.row_begin);
    m[meta_.len + i] = static_cast<int32_t>(ch.len);
    m[meta_.slot + i] = ch.slot;
    m[meta_.fresh + i] = ch.start_fresh ? 1 : 0;
    max_chunk_len = std::max(max_chunk_len, static_cast<int>(ch.len));
    if (ch.logits_rows == 0) continue;
    if (first_out_row < 0) first_out_row = static_cast<int>(ch.out_row);
    if (ch.out_row != first_out_row + n_logits)
      return absl::InternalError("logits rows of a pass are not contiguous");
    for (int64_t r = ch.row_begin + ch.len - ch.logits_rows; r < ch.row_begin + ch.len; ++r) {
      m[meta_.logit_rows + n_logits++] = static_cast<int32_t>(r);
      emitting.push_back(&ch);
    }
  }
  m[meta_.logit_count] = n_logits;

  const int bucket = std::min(GraphBucket(static_cast<int>(rows)), max_rows_);
  const bool use_graph = decode && use_graphs_;
  if (use_graph) {
    for (int i = num_chunks; i < bucket; ++i) {  // padding rows: no state read or written
      m[meta_.tokens + i] = 0;
      m[meta_.row_begin + i] = i;
      m[meta_.len + i] = 1;
      m[meta_.slot + i] = -1;
      m[meta_.fresh + i] = 0;
    }
    MS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_device_, meta_host_, meta_.upload * 4,
                                            cudaMemcpyHostToDevice, stream_),
                            "step metadata upload");
    RETURN_IF_ERROR(ReplayDecodeGraph(bucket));
  } else {
    MS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_device_, meta_host_, meta_.upload * 4,
                                            cudaMemcpyHostToDevice, stream_),
                            "step metadata upload");
    RETURN_IF_ERROR(EnqueueForward({rows, num_chunks, max_chunk_len, decode}, n_logits));
    ++stats_.eager_passes;
  }

  // lm_head only on the rows that emit logits; the argmax of every such row on the device, and
  // back to the caller's buffer only the rows that need more than their token. A replayed graph
  // has already done the first two for its whole bucket (GraphIncludesLogits).
  if (use_graph && GraphIncludesLogits(bucket)) {
    if (n_logits > 0) RETURN_IF_ERROR(DownloadLogitsRows(*out, 0, n_logits, first_out_row));
  } else {
    for (int g0 = 0; g0 < n_logits; g0 += logits_rows_) {
      const int count = std::min(logits_rows_, n_logits - g0);
      RETURN_IF_ERROR(EnqueueLogits(g0, count));
      ++stats_.eager_lm_head_groups;
      RETURN_IF_ERROR(DownloadLogitsRows(*out, g0, count, first_out_row));
    }
  }
  if (n_logits > 0) {
    MS_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(meta_host_ + meta_.argmax, meta_device_ + meta_.argmax,
                        static_cast<size_t>(n_logits) * 4, cudaMemcpyDeviceToHost, stream_),
        "argmax download");
  }
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "forward pass"));
  // A sequence's argmax is its last row's: the last of its chunk that holds its last token.
  for (int r = 0; r < n_logits; ++r) {
    if (emitting[r]->emits_logits && (r + 1 == n_logits || emitting[r + 1] != emitting[r]))
      out->argmax[emitting[r]->sequence] = meta_host_[meta_.argmax + r];
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::EnqueueLogits(int g0, int count) {
  const int64_t V = config_.vocab_size;
  const int64_t esize = kernels::GemmTypeSize(gemm_type_);
  RETURN_IF_ERROR(Gemm(lm_head_, static_cast<char*>(final_) + g0 * config_.d_model * esize,
                       config_.d_model, count, logits_, V));
  kernels::ArgMaxParams argmax;
  argmax.logits = logits_;
  argmax.rows = count;
  argmax.cols = argmax.ld = V;
  argmax.out = meta_device_ + meta_.argmax + g0;
  return LaunchStatus(kernels::InvokeArgMax(argmax, stream_), "ArgMax");
}

bool CudaBackend::GraphIncludesLogits(int bucket) const { return bucket <= logits_rows_; }

absl::Status CudaBackend::DownloadLogitsRows(StepOutput& out, int g0, int count,
                                             int first_out_row) {
  // Runs of consecutive rows that want their logits become one copy each.
  const int64_t V = config_.vocab_size;
  const auto wanted = [&](int r) { return !emitting_chunks_[g0 + r]->token_only; };
  for (int r = 0; r < count;) {
    if (!wanted(r)) {
      ++r;
      continue;
    }
    int end = r + 1;
    while (end < count && wanted(end)) ++end;
    MS_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(out.logits.data() + static_cast<size_t>(first_out_row + g0 + r) * V,
                        logits_ + static_cast<size_t>(r) * V, static_cast<size_t>(end - r) * V * 4,
                        cudaMemcpyDeviceToHost, stream_),
        "logits download");
    stats_.logits_rows_downloaded += end - r;
    r = end;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ReplayDecodeGraph(int bucket) {
  auto it = graphs_.find(bucket);
  if (it == graphs_.end()) {
    // Run the step once eagerly with every row as padding (no state touched, no logits) so lazy
    // module loading and cuBLAS's first-call setup happen outside the capture.
    std::vector<int32_t> saved(meta_host_, meta_host_ + meta_.total);
    std::fill_n(meta_host_ + meta_.slot, bucket, -1);
    meta_host_[meta_.logit_count] = 0;
    MS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_device_, meta_host_, meta_.upload * 4,
                                            cudaMemcpyHostToDevice, stream_),
                            "step metadata upload");
    RETURN_IF_ERROR(EnqueueForward(DecodePass(bucket), bucket));
    if (GraphIncludesLogits(bucket)) RETURN_IF_ERROR(EnqueueLogits(0, bucket));
    MS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "graph warm-up");
    std::copy(saved.begin(), saved.end(), meta_host_);
    MS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_device_, meta_host_, meta_.upload * 4,
                                            cudaMemcpyHostToDevice, stream_),
                            "step metadata upload");
    MS_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                            "graph capture begin");
    absl::Status enqueued = EnqueueForward(DecodePass(bucket), bucket);
    if (enqueued.ok() && GraphIncludesLogits(bucket)) enqueued = EnqueueLogits(0, bucket);
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (!enqueued.ok() || end != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      return enqueued.ok() ? CudaStatus(end, "graph capture end") : enqueued;
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    MS_CUDA_RETURN_IF_ERROR(inst, absl::StrCat("graph instantiation for batch ", bucket));
    it = graphs_.emplace(bucket, exec).first;
    ++stats_.graph_captures;
  }
  MS_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_), "graph launch");
  ++stats_.graph_replays;
  return absl::OkStatus();
}

absl::Status CudaBackend::EnqueueForward(const PassShape& pass, int64_t logit_rows_bound) {
  kernels::EmbeddingParams emb;
  emb.table = embeddings_.data;
  emb.table_type = gemm_type_;
  emb.tokens = meta_device_ + meta_.tokens;
  emb.out = residual_;
  emb.rows = pass.rows;
  emb.dim = config_.d_model;
  RETURN_IF_ERROR(LaunchStatus(kernels::InvokeEmbedding(emb, stream_), "Embedding"));
  for (size_t i = 0; i < layers_.size(); ++i) {
    RETURN_IF_ERROR(EnqueueLayer(layers_[i], static_cast<int64_t>(i), pass));
  }
  // Last residual add fused with norm_f, gathering only the rows that emit logits.
  kernels::ResidualRmsNormParams fin;
  fin.residual = residual_;
  fin.delta = delta_;
  fin.delta_bias = layers_.back().out_proj_bias;
  fin.weight = norm_f_;
  fin.out = final_;
  fin.out_type = gemm_type_;
  fin.row_index = meta_device_ + meta_.logit_rows;
  fin.out_rows_device = meta_device_ + meta_.logit_count;
  fin.out_rows = logit_rows_bound;
  fin.dim = config_.d_model;
  fin.eps = static_cast<float>(config_.layer_norm_epsilon);
  return LaunchStatus(kernels::InvokeResidualRmsNorm(fin, stream_), "ResidualRmsNorm (norm_f)");
}

absl::Status CudaBackend::EnqueueLayer(const Layer& l, int64_t index, const PassShape& pass) {
  const ModelConfig& c = config_;
  const int64_t rows = pass.rows;
  const bool decode = pass.decode;
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank;
  const int64_t ld_dbl = R + 2 * N;
  const int64_t slot_stride = c.conv_state_floats() + c.ssm_state_floats();
  // Every GEMM input is in the weight dtype, whatever the pass size, so that a sequence's tokens
  // do not depend on what it is batched with. f32 inputs are read straight from the fp32
  // buffers; for bf16 weights the producers also write a rounded copy.
  const bool act_f32 = gemm_type_ == GemmType::kF32;
  const bool falcon = c.model_type == ModelType::kFalconMamba;
  const void* x_conv_in = act_f32 ? static_cast<const void*>(x_conv_) : x_conv_gemm_;
  void* dt_low = act_f32 ? static_cast<void*>(x_dbl_) : dt_low_;
  const int64_t ld_dt_low = act_f32 ? ld_dbl : ld_dt_low_;

  // 1. residual += previous mixer output; hidden = RMSNorm(residual) * norm.
  kernels::ResidualRmsNormParams norm;
  norm.residual = residual_;
  norm.delta = index == 0 ? nullptr : delta_;
  norm.delta_bias = index == 0 ? nullptr : layers_[index - 1].out_proj_bias;
  norm.weight = l.norm;
  norm.out = hidden_;
  norm.out_type = gemm_type_;
  norm.out_rows = rows;
  norm.dim = D;
  norm.eps = static_cast<float>(c.layer_norm_epsilon);
  RETURN_IF_ERROR(LaunchStatus(kernels::InvokeResidualRmsNorm(norm, stream_), "ResidualRmsNorm"));

  // 2-3. xz = in_proj(hidden): [rows][2E] fp32 (its bias is added by the conv and the scan); then
  // the causal conv + SiLU of the x half, with the slot's conv state. A decode pass small enough
  // for the skinny GEMM runs the conv inside in_proj, as each output is written.
  kernels::CausalConv1dParams conv;
  conv.x = xz_;
  conv.ld_x = 2 * E;
  conv.x_bias = l.in_proj_bias;
  conv.weight = l.conv_weight;
  conv.bias = l.conv_bias;
  conv.conv_state = ConvState(index);
  conv.slot_stride = slot_stride;
  conv.chunks = DeviceChunks(pass);
  conv.out = x_conv_;
  conv.ld_out = E;
  conv.out_gemm = act_f32 ? nullptr : x_conv_gemm_;
  conv.ld_out_gemm = E;
  conv.out_gemm_type = gemm_type_;
  conv.d_inner = E;
  conv.k_conv = static_cast<int>(c.d_conv);
  // A decode pass the skinny GEMM takes fuses the conv into in_proj and the B/C/dt norm into
  // dt_proj and the state update (step 5).
  const bool fused_decode = decode && UsesSkinnyGemm(rows);
  SkinnyExtras in_proj_extras;
  if (fused_decode) in_proj_extras.fused_conv = &conv;
  RETURN_IF_ERROR(Gemm(l.in_proj, hidden_, D, rows, xz_, 2 * E, in_proj_extras));
  if (!fused_decode) {
    RETURN_IF_ERROR(LaunchStatus(decode ? kernels::InvokeCausalConv1dUpdate(conv, stream_)
                                        : kernels::InvokeCausalConv1dPrefill(conv, stream_),
                                 "CausalConv1d"));
  }

  // 4. x_dbl = x_proj(x): [rows][R+2N] = dt_low | B | C.
  RETURN_IF_ERROR(Gemm(l.x_proj, x_conv_in, E, rows, x_dbl_, ld_dbl));

  // 5. Falcon-Mamba's weightless RMSNorm of dt_low, B, C; dt_low into the GEMM dtype. A decode
  // pass small enough for the skinny GEMM does both inside the kernels that read them instead
  // (dt_proj from fp32 x_dbl, the state update from raw B and C): one launch fewer per layer.
  if (!fused_decode && (falcon || !act_f32)) {
    kernels::BcdtRmsNormParams bc;
    bc.x_dbl = x_dbl_;
    bc.ld_x_dbl = ld_dbl;
    bc.dt_low = dt_low;
    bc.ld_dt_low = ld_dt_low;
    bc.dt_low_type = gemm_type_;
    bc.rows = rows;
    bc.dt_rank = R;
    bc.d_state = N;
    bc.normalize = falcon;
    bc.eps = static_cast<float>(c.mixer_rms_eps);
    RETURN_IF_ERROR(LaunchStatus(kernels::InvokeBcdtRmsNorm(bc, stream_), "BcdtRmsNorm"));
  }

  // 6. dt_raw = dt_proj(dt_low): [rows][E]; bias and softplus happen in the scan.
  if (fused_decode) {
    SkinnyExtras dt_extras;
    dt_extras.x_f32 = true;
    dt_extras.rms_normalize_x = falcon;
    RETURN_IF_ERROR(Gemm(l.dt_proj, x_dbl_, ld_dbl, rows, dt_, E, dt_extras));
  } else {
    RETURN_IF_ERROR(Gemm(l.dt_proj, dt_low, ld_dt_low, rows, dt_, E));
  }

  // 7. selective scan + D skip + SiLU(z) gate, with the slot's SSM state.
  kernels::SelectiveScanParams scan;
  scan.x = x_conv_;
  scan.ld_x = E;
  scan.dt = dt_;
  scan.ld_dt = E;
  scan.dt_bias = l.dt_bias;
  scan.b = x_dbl_ + R;
  scan.c = x_dbl_ + R + N;
  scan.ld_bc = ld_dbl;
  scan.z = xz_ + E;
  scan.ld_z = 2 * E;
  scan.z_bias = l.in_proj_bias != nullptr ? l.in_proj_bias + E : nullptr;
  scan.a = l.a;
  scan.d = l.d;
  scan.ssm_state = SsmState(index);
  scan.slot_stride = slot_stride;
  scan.chunks = DeviceChunks(pass);
  scan.y = y_;
  scan.ld_y = E;
  scan.y_type = gemm_type_;
  scan.d_inner = E;
  scan.d_state = static_cast<int>(N);
  scan.rms_normalize_bc = fused_decode && falcon;
  scan.bc_eps = static_cast<float>(c.mixer_rms_eps);
  RETURN_IF_ERROR(LaunchStatus(decode ? kernels::InvokeSelectiveScanUpdate(scan, stream_)
                                      : kernels::InvokeSelectiveScanPrefill(scan, stream_),
                               "SelectiveScan"));

  // 8. delta = out_proj(y): [rows][D]; added to the residual by the next norm.
  return Gemm(l.out_proj, y_, E, rows, delta_, D);
}

bool CudaBackend::UsesSkinnyGemm(int64_t rows) const {
  return use_skinny_gemm_ && rows <= kernels::kSkinnyGemmMaxRows;
}

absl::Status CudaBackend::Gemm(const Matrix& w, const void* x, int64_t ldx, int64_t rows, float* y,
                               int64_t ldy, const SkinnyExtras& extras) {
  if (UsesSkinnyGemm(rows)) {
    kernels::SkinnyGemmParams p;
    p.type = gemm_type_;
    p.w = w.data;
    p.x = x;
    p.ldx = ldx;
    p.y = y;
    p.ldy = ldy;
    p.rows = rows;
    p.m = w.rows;
    p.k = w.cols;
    if (extras.fused_conv != nullptr) {
      p.fuse_conv = true;
      p.conv = *extras.fused_conv;
    }
    p.x_f32 = extras.x_f32;
    p.rms_normalize_x = extras.rms_normalize_x;
    p.x_eps = static_cast<float>(config_.mixer_rms_eps);
    const int64_t column_pairs = (w.rows + 1) / 2;
    if (column_pairs < kSplitKMaxColumnPairs && w.cols >= kSplitKMinK &&
        w.rows <= split_k_max_columns_ && extras.fused_conv == nullptr) {
      p.k_blocks = kSplitKBlocks;
      p.partials = split_k_partials_;
      p.counters = split_k_counters_;
    }
    if (kernels::SkinnyGemmSupports(p)) {
      return LaunchStatus(kernels::InvokeSkinnyGemm(p, stream_), "SkinnyGemm");
    }
  }
  if (extras.any()) {
    return absl::InternalError(absl::StrCat("the skinny GEMM cannot take this ", w.rows, "x",
                                            w.cols, " product of ", rows,
                                            " rows with its decode extras"));
  }
  // Row-major Y = X·Wᵀ is column-major Yᵀ = W·Xᵀ with W read transposed. fp32 accumulation
  // (CUBLAS_COMPUTE_32F: no TF32 for f32 weights).
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t type = CudaType(gemm_type_);
  return CublasStatus(
      cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows),
                   static_cast<int>(rows), static_cast<int>(w.cols), &alpha, w.data, type,
                   static_cast<int>(w.cols), x, type, static_cast<int>(ldx), &beta, y, CUDA_R_32F,
                   static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      absl::StrCat("cublasGemmEx ", w.rows, "x", w.cols, " rows ", rows));
}

}  // namespace mambaserve
