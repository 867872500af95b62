#include "engine/model/model.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

class TensorBinder {
 public:
  TensorBinder(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

  // Finds `name` and checks its shape; `required` false allows absence (returns nullptr).
  absl::StatusOr<const TensorView*> Bind(const std::string& name, std::vector<int64_t> shape,
                                         bool required = true) {
    const TensorView* view = checkpoint_.Find(name);
    if (view == nullptr) {
      if (!required) return nullptr;
      return absl::InvalidArgumentError(absl::StrCat(checkpoint_.dir(), ": missing tensor \"", name,
                                                     "\" (expected shape [",
                                                     absl::StrJoin(shape, ", "), "])"));
    }
    if (view->shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(view->file, ": tensor \"", name, "\" has shape ", view->ShapeString(),
                       ", expected [", absl::StrJoin(shape, ", "), "]"));
    }
    return view;
  }

  absl::StatusOr<const TensorView*> Find(const std::string& name, size_t rank) {
    const TensorView* view = checkpoint_.Find(name);
    if (view == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(checkpoint_.dir(), ": missing tensor \"", name, "\""));
    }
    if (view->shape.size() != rank) {
      return absl::InvalidArgumentError(absl::StrCat(view->file, ": tensor \"", name,
                                                     "\" has shape ", view->ShapeString(),
                                                     ", expected rank ", rank));
    }
    return view;
  }

 private:
  const Checkpoint& checkpoint_;
};

// FNV-1a, enough to tell checkpoints apart (not a security boundary: imports are also checksummed).
class Fnv1a {
 public:
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) hash_ = (hash_ ^ p[i]) * 0x100000001b3ull;
  }
  void Add(std::string_view s) { Add(s.data(), s.size()); }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

std::string Fingerprint(const Model& model) {
  Fnv1a h;
  for (const auto& [name, view] : model.checkpoint->tensors()) {
    h.Add(name);
    h.Add(DTypeName(view.dtype));
    h.Add(view.shape.data(), view.shape.size() * sizeof(int64_t));
    // Sample up to 4 KiB spread over the tensor: cheap, and differs between any two trained models.
    const size_t stride = std::max<size_t>(1, view.nbytes / 64);
    for (size_t off = 0; off < view.nbytes; off += stride)
      h.Add(view.data + off, std::min<size_t>(64, view.nbytes - off));
    // Each read maps the pages around it too (the kernel's fault-around): 64 of them spread over a
    // tensor map most of it. Dropped again at once, the load never holds the whole checkpoint.
    model.checkpoint->ReleasePages(view.data, view.nbytes);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h.value()));
  return buf;
}

}  // namespace

absl::Status CheckFinite(const TensorView& tensor) {
  const size_t n = static_cast<size_t>(tensor.numel());
  const size_t elem = DTypeSize(tensor.dtype);
  for (size_t i = 0; i < n; ++i) {
    bool finite;
    if (tensor.dtype == DType::kF32) {
      uint32_t bits;
      std::memcpy(&bits, tensor.data + i * elem, 4);
      finite = (bits & 0x7f800000u) != 0x7f800000u;
    } else {
      uint16_t bits;
      std::memcpy(&bits, tensor.data + i * elem, 2);
      finite =
          tensor.dtype == DType::kBF16 ? (bits & 0x7f80u) != 0x7f80u : (bits & 0x7c00u) != 0x7c00u;
    }
    if (!finite) {
      return absl::InvalidArgumentError(absl::StrCat(tensor.file, ": tensor \"", tensor.name,
                                                     "\" holds a NaN or Inf at flat index ", i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& dir,
                                                 const LoadOptions& options) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string config_text, ReadTextFile(config_path));
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfigJson(config_text, config_path));

  auto model = std::make_unique<Model>();
  model->dir = dir;
  ASSIGN_OR_RETURN(model->checkpoint, Checkpoint::Open(dir));
  TensorBinder bind(*model->checkpoint);

  // Sizes the shapes settle: V and D from the embeddings, E from in_proj, R from dt_proj, N from
  // A_log, K from conv1d (Falcon-Mamba-7B's config has a wrong `expand`).
  ASSIGN_OR_RETURN(model->embeddings, bind.Find("backbone.embeddings.weight", 2));
  const int64_t vocab_rows = model->embeddings->shape[0];
  if (model->embeddings->shape[1] != config.d_model) {
    return absl::InvalidArgumentError(absl::StrCat(
        model->embeddings->file, ": tensor \"backbone.embeddings.weight\" has shape ",
        model->embeddings->ShapeString(), " but config.json says hidden_size = ", config.d_model));
  }
  if (config.vocab_size > vocab_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(model->embeddings->file, ": tensor \"backbone.embeddings.weight\" has ",
                     vocab_rows, " rows but config.json says vocab_size = ", config.vocab_size));
  }
  config.vocab_size = vocab_rows;
  const std::string p0 = "backbone.layers.0.mixer.";
  ASSIGN_OR_RETURN(const TensorView* in_proj0, bind.Find(p0 + "in_proj.weight", 2));
  ASSIGN_OR_RETURN(const TensorView* dt_proj0, bind.Find(p0 + "dt_proj.weight", 2));
  ASSIGN_OR_RETURN(const TensorView* conv0, bind.Find(p0 + "conv1d.weight", 3));
  if (in_proj0->shape[0] % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(in_proj0->file, ": tensor \"", in_proj0->name,
                                                   "\" has an odd first dimension ",
                                                   in_proj0->ShapeString()));
  }
  config.d_inner = in_proj0->shape[0] / 2;
  config.dt_rank = dt_proj0->shape[1];
  config.d_conv = conv0->shape[2];
  if (config.d_conv < 2) {
    return absl::InvalidArgumentError(absl::StrCat(conv0->file, ": conv kernel width ",
                                                   config.d_conv, " in ", conv0->ShapeString(),
                                                   " must be at least 2"));
  }
  ASSIGN_OR_RETURN(const TensorView* a_log0, bind.Find(p0 + "A_log", 2));
  if (a_log0->shape[1] != config.d_state) {
    return absl::InvalidArgumentError(
        absl::StrCat(a_log0->file, ": tensor \"", a_log0->name, "\" has shape ",
                     a_log0->ShapeString(), " but config.json says state_size = ", config.d_state));
  }

  const int64_t D = config.d_model, E = config.d_inner, N = config.d_state, R = config.dt_rank,
                K = config.d_conv, V = config.vocab_size;
  if (E <= 0 || R <= 0 || V <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": d_inner (", E, "), dt_rank (", R, ") and vocab (", V,
                     ") from the tensor shapes must all be positive"));
  }
  // Every layer has a norm tensor: count them before trusting num_hidden_layers with an allocation.
  if (config.n_layers > static_cast<int64_t>(model->checkpoint->tensors().size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": num_hidden_layers = ", config.n_layers, " but the checkpoint holds only ",
        model->checkpoint->tensors().size(), " tensors"));
  }
  model->layers.resize(config.n_layers);
  for (int64_t i = 0; i < config.n_layers; ++i) {
    const std::string p = absl::StrCat("backbone.layers.", i, ".");
    const std::string m = p + "mixer.";
    LayerWeights& l = model->layers[i];
    ASSIGN_OR_RETURN(l.norm, bind.Bind(p + "norm.weight", {D}));
    ASSIGN_OR_RETURN(l.in_proj, bind.Bind(m + "in_proj.weight", {2 * E, D}));
    ASSIGN_OR_RETURN(l.in_proj_bias, bind.Bind(m + "in_proj.bias", {2 * E}, config.use_bias));
    ASSIGN_OR_RETURN(l.conv1d, bind.Bind(m + "conv1d.weight", {E, 1, K}));
    ASSIGN_OR_RETURN(l.conv1d_bias, bind.Bind(m + "conv1d.bias", {E}, config.use_conv_bias));
    ASSIGN_OR_RETURN(l.x_proj, bind.Bind(m + "x_proj.weight", {R + 2 * N, E}));
    ASSIGN_OR_RETURN(l.dt_proj, bind.Bind(m + "dt_proj.weight", {E, R}));
    ASSIGN_OR_RETURN(l.dt_proj_bias, bind.Bind(m + "dt_proj.bias", {E}));
    ASSIGN_OR_RETURN(l.a_log, bind.Bind(m + "A_log", {E, N}));
    ASSIGN_OR_RETURN(l.d, bind.Bind(m + "D", {E}));
    ASSIGN_OR_RETURN(l.out_proj, bind.Bind(m + "out_proj.weight", {D, E}));
    ASSIGN_OR_RETURN(l.out_proj_bias, bind.Bind(m + "out_proj.bias", {D}, config.use_bias));
  }
  // Biases follow the config for every layer alike, so backends never see a mix.
  for (int64_t i = 0; i < config.n_layers; ++i) {
    const std::string m = absl::StrCat("backbone.layers.", i, ".mixer.");
    for (const auto& [name, wanted] : {std::pair{m + "in_proj.bias", config.use_bias},
                                       std::pair{m + "out_proj.bias", config.use_bias},
                                       std::pair{m + "conv1d.bias", config.use_conv_bias}}) {
      if (!wanted && model->checkpoint->Find(name) != nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(model->checkpoint->Find(name)->file, ": tensor \"", name,
                         "\" is present but config.json turns that bias off"));
      }
    }
  }
  ASSIGN_OR_RETURN(model->norm_f, bind.Bind("backbone.norm_f.weight", {D}));
  if (config.tie_word_embeddings) {
    model->lm_head = model->embeddings;
    // Some checkpoints store a copy of the tied head, which is fine. A different one is ambiguous
    // (transformers would load it over the tie): refuse rather than silently pick one.
    if (const TensorView* stored = model->checkpoint->Find("lm_head.weight"); stored != nullptr) {
      const TensorView& e = *model->embeddings;
      const bool same = stored->dtype == e.dtype && stored->shape == e.shape &&
                        stored->nbytes == e.nbytes &&
                        std::memcmp(stored->data, e.data, e.nbytes) == 0;
      if (!same) {
        return absl::InvalidArgumentError(absl::StrCat(
            config_path,
            " ties the output head to the embeddings (tie_word_embeddings: true), but ",
            stored->file, " also stores \"lm_head.weight\" ", stored->ShapeString(), " ",
            DTypeName(stored->dtype), " that differs from \"", e.name, "\" ", e.ShapeString(), " ",
            DTypeName(e.dtype),
            ": set tie_word_embeddings to false to use the stored head, or remove it"));
      }
    }
  } else {
    ASSIGN_OR_RETURN(model->lm_head, bind.Bind("lm_head.weight", {V, D}));
  }
  model->checkpoint_dtype = in_proj0->dtype;

  model->fingerprint = Fingerprint(*model);
  if (options.check_finite) {
    // Each tensor's pages are dropped once checked: every backend copies the weights into a layout
    // of its own, so holding the whole checkpoint resident here would only raise the peak (by the
    // checkpoint's size) before the first copy is made. They are read from the file again there.
    for (const auto& [name, view] : model->checkpoint->tensors()) {
      RETURN_IF_ERROR(CheckFinite(view));
      model->checkpoint->ReleasePages(view.data, view.nbytes);
    }
  }
  model->config = config;
  return model;
}

}  // namespace mambaserve
