#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/model/model.h"
#include "engine/testing/random_model.h"
#include "engine/testing/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

ModelConfig TinyConfig(ModelType type = ModelType::kMamba) { return *PresetConfig("tiny", type); }

// Rewrites model.safetensors of `dir` with `mutate` applied to the tensor list / values.
void RewriteCheckpoint(
    const std::string& dir, const std::function<void(std::vector<TensorSpec>&)>& mutate_specs,
    const std::function<void(const std::string&, std::span<float>)>& mutate_values) {
  auto model = LoadModel(dir, {.check_finite = false});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<TensorSpec> specs;
  for (const auto& [name, view] : (*model)->checkpoint->tensors())
    specs.push_back({name, view.shape});
  mutate_specs(specs);
  std::vector<std::vector<float>> values;
  for (const TensorSpec& s : specs) {
    const TensorView* view = (*model)->checkpoint->Find(s.name);
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    std::vector<float> v(numel, 0.5f);
    if (view != nullptr && view->numel() == numel)
      ConvertToF32(view->dtype, view->data, numel, v.data());
    mutate_values(s.name, v);
    values.push_back(std::move(v));
  }
  model->reset();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", specs, DType::kF32,
                               [&](size_t i, std::span<float> out) {
                                 std::copy(values[i].begin(), values[i].end(), out.begin());
                               })
                  .ok());
}

TEST(ModelLoadingTest, LoadsGeneratedModelsOfEveryTypeAndDtype) {
  for (ModelType type : {ModelType::kMamba, ModelType::kFalconMamba}) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      TempDir dir;
      ASSERT_TRUE(WriteRandomModel(TinyConfig(type), dtype, 7, dir.path()).ok());
      auto model = LoadModel(dir.path());
      ASSERT_TRUE(model.ok()) << model.status();
      const ModelConfig& c = (*model)->config;
      EXPECT_EQ(c.model_type, type);
      EXPECT_EQ(c.d_model, 64);
      EXPECT_EQ(c.d_inner, 128);
      EXPECT_EQ(c.dt_rank, 4);
      EXPECT_EQ(c.vocab_size, 512);
      EXPECT_EQ((*model)->layers.size(), 2u);
      EXPECT_EQ((*model)->checkpoint_dtype, dtype);
      EXPECT_EQ((*model)->lm_head == (*model)->embeddings, type == ModelType::kMamba);
    }
  }
}

TEST(ModelLoadingTest, SevenBPresetHasFalconMamba7BShapes) {
  // tiiuae/falcon-mamba-7b's config.json: hidden 4096, 64 layers, intermediate 8192, time-step
  // rank 256, state 16, conv 4, vocabulary 65024, untied head.
  const ModelConfig c = *PresetConfig("7b", ModelType::kFalconMamba);
  EXPECT_EQ(c.d_model, 4096);
  EXPECT_EQ(c.n_layers, 64);
  EXPECT_EQ(c.d_inner, 8192);
  EXPECT_EQ(c.dt_rank, 256);
  EXPECT_EQ(c.d_state, 16);
  EXPECT_EQ(c.d_conv, 4);
  EXPECT_EQ(c.vocab_size, 65024);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(PresetConfig("7B", ModelType::kFalconMamba).ok());
}

TEST(ModelLoadingTest, SizesComeFromShapesNotFromAWrongExpand) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  // Falcon-Mamba-7B's config says expand 16; the shapes are what count.
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir.file("config.json")));
  config["expand"] = 16;
  config["intermediate_size"] = 1024;
  config["time_step_rank"] = "auto";
  std::ofstream(dir.file("config.json")) << config.dump();
  auto model = LoadModel(dir.path());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config.d_inner, 128);
  EXPECT_EQ((*model)->config.dt_rank, 4);
}

TEST(ModelLoadingTest, LoadsShardedCheckpoints) {
  TempDir single, sharded;
  ASSERT_TRUE(
      WriteRandomModel(TinyConfig(ModelType::kFalconMamba), DType::kBF16, 3, single.path()).ok());
  auto reference = LoadModel(single.path());
  ASSERT_TRUE(reference.ok());
  // Split into two shards: embeddings + layer 0 in the first, the rest in the second.
  std::vector<TensorSpec> first, second;
  for (const auto& [name, view] : (*reference)->checkpoint->tensors()) {
    (name.find("layers.1.") != std::string::npos || name.rfind("lm_head", 0) == 0 ? second : first)
        .push_back({name, view.shape});
  }
  nlohmann::json index;
  auto write_shard = [&](const std::vector<TensorSpec>& specs, const std::string& file) {
    for (const auto& s : specs) index["weight_map"][s.name] = file;
    ASSERT_TRUE(WriteSafetensors(sharded.file(file), specs, DType::kBF16,
                                 [&](size_t i, std::span<float> out) {
                                   const TensorView* v =
                                       (*reference)->checkpoint->Find(specs[i].name);
                                   ConvertToF32(v->dtype, v->data, out.size(), out.data());
                                 })
                    .ok());
  };
  write_shard(first, "model-00001-of-00002.safetensors");
  write_shard(second, "model-00002-of-00002.safetensors");
  std::ofstream(sharded.file("model.safetensors.index.json")) << index.dump();
  std::filesystem::copy_file(single.file("config.json"), sharded.file("config.json"));
  auto model = LoadModel(sharded.path());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->fingerprint, (*reference)->fingerprint);
  EXPECT_NE((*model)->lm_head, (*model)->embeddings);
}

// A tied config with a stored head: a copy of the embeddings loads; a different head is refused
// (transformers would load it over the tie), naming both tensors.
TEST(ModelLoadingTest, ATiedConfigWithADifferentStoredHeadIsRefused) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());  // tied
  const int64_t V = TinyConfig().vocab_size, D = TinyConfig().d_model;
  auto add_head = [](std::vector<TensorSpec>& specs, int64_t v, int64_t d) {
    specs.push_back({"lm_head.weight", {v, d}});
  };
  RewriteCheckpoint(
      dir.path(), [&](std::vector<TensorSpec>& specs) { add_head(specs, V, D); },
      [](const std::string& name, std::span<float> v) {
        if (name == "backbone.embeddings.weight" || name == "lm_head.weight")
          std::fill(v.begin(), v.end(), 0.25f);
      });
  auto copy = LoadModel(dir.path());
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ((*copy)->lm_head, (*copy)->embeddings);
  copy->reset();

  RewriteCheckpoint(
      dir.path(), [](std::vector<TensorSpec>&) {},
      [](const std::string& name, std::span<float> v) {
        if (name == "lm_head.weight") v[7] = 3.0f;
      });
  auto refused = LoadModel(dir.path());
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status()));
  EXPECT_THAT(refused.status().message(), HasSubstr("lm_head.weight"));
  EXPECT_THAT(refused.status().message(), HasSubstr("backbone.embeddings.weight"));
  EXPECT_THAT(refused.status().message(), HasSubstr("tie_word_embeddings"));
}

TEST(ModelLoadingTest, MissingDirectoryAndFiles) {
  EXPECT_THAT(LoadModel("/nonexistent/model").status().message(), HasSubstr("config.json"));
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  std::filesystem::remove(dir.file("model.safetensors"));
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("no model.safetensors"));
}

TEST(ModelLoadingTest, TruncatedWeightsFile) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  const auto size = std::filesystem::file_size(dir.file("model.safetensors"));
  std::filesystem::resize_file(dir.file("model.safetensors"), size - 100);
  absl::Status s = LoadModel(dir.path()).status();
  EXPECT_THAT(s.message(), HasSubstr("out of bounds"));
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors"));
}

TEST(ModelLoadingTest, MissingTensorIsNamed) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  RewriteCheckpoint(
      dir.path(),
      [](std::vector<TensorSpec>& specs) {
        std::erase_if(specs,
                      [](const TensorSpec& s) { return s.name == "backbone.layers.1.mixer.D"; });
      },
      [](const std::string&, std::span<float>) {});
  absl::Status s = LoadModel(dir.path()).status();
  EXPECT_THAT(s.message(), HasSubstr("missing tensor \"backbone.layers.1.mixer.D\""));
}

TEST(ModelLoadingTest, WrongShapeNamesTensorExpectedAndActual) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  RewriteCheckpoint(
      dir.path(),
      [](std::vector<TensorSpec>& specs) {
        for (auto& s : specs)
          if (s.name == "backbone.layers.1.mixer.x_proj.weight") s.shape = {35, 128};
      },
      [](const std::string&, std::span<float>) {});
  absl::Status s = LoadModel(dir.path()).status();
  EXPECT_THAT(s.message(), HasSubstr("backbone.layers.1.mixer.x_proj.weight"));
  EXPECT_THAT(s.message(), HasSubstr("[35, 128]"));
  EXPECT_THAT(s.message(), HasSubstr("expected [36, 128]"));
}

TEST(ModelLoadingTest, HiddenSizeMismatchWithConfig) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir.file("config.json")));
  config["hidden_size"] = 96;
  std::ofstream(dir.file("config.json")) << config.dump();
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("hidden_size = 96"));
}

TEST(ModelLoadingTest, NonFiniteWeightsAreReported) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  RewriteCheckpoint(
      dir.path(), [](std::vector<TensorSpec>&) {},
      [](const std::string& name, std::span<float> v) {
        if (name == "backbone.layers.0.mixer.out_proj.weight") v[77] = NAN;
      });
  absl::Status s = LoadModel(dir.path()).status();
  EXPECT_THAT(s.message(), HasSubstr("backbone.layers.0.mixer.out_proj.weight"));
  EXPECT_THAT(s.message(), HasSubstr("NaN or Inf at flat index 77"));
}

TEST(ModelLoadingTest, BadConfigFields) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  std::ofstream(dir.file("config.json")) << R"({"model_type": "llama"})";
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("\"llama\""));
  std::ofstream(dir.file("config.json")) << R"({"model_type": "mamba", "hidden_size": "64"})";
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("hidden_size"));
  std::ofstream(dir.file("config.json")) << "not json";
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("not a JSON object"));
  // Sizes are bounded, so that no product of them can overflow before the shapes are checked.
  std::ofstream(dir.file("config.json"))
      << R"({"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2,)"
      << R"( "state_size": 4611686018427387904})";
  EXPECT_THAT(LoadModel(dir.path()).status().message(),
              HasSubstr("\"state_size\" is 4611686018427387904; at most 1048576"));
  // Found by config_json_fuzz: a negative size the tensor shapes would only replace later.
  std::ofstream(dir.file("config.json"))
      << R"({"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2,)"
      << R"( "state_size": 16, "intermediate_size": -28})";
  EXPECT_THAT(LoadModel(dir.path()).status().message(),
              HasSubstr("\"intermediate_size\" is -28; a size is >= 0"));
}

TEST(ModelLoadingTest, ImplausibleLayerCountAndZeroSizedDimensions) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir.file("config.json")));
  config["num_hidden_layers"] = int64_t{1} << 40;
  std::ofstream(dir.file("config.json")) << config.dump();
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("num_hidden_layers"));

  config["num_hidden_layers"] = 2;
  std::ofstream(dir.file("config.json")) << config.dump();
  RewriteCheckpoint(
      dir.path(),
      [](std::vector<TensorSpec>& specs) {
        for (auto& s : specs)
          if (s.name.find("dt_proj.weight") != std::string::npos) s.shape = {128, 0};
      },
      [](const std::string&, std::span<float>) {});
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("must all be positive"));
}

TEST(ModelLoadingTest, BiasTensorsMustFollowTheConfig) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  RewriteCheckpoint(
      dir.path(),
      [](std::vector<TensorSpec>& specs) {
        specs.push_back({"backbone.layers.1.mixer.out_proj.bias", {64}});
      },
      [](const std::string&, std::span<float>) {});
  EXPECT_THAT(LoadModel(dir.path()).status().message(),
              HasSubstr("\"backbone.layers.1.mixer.out_proj.bias\" is present but config.json "
                        "turns that bias off"));
}

TEST(ModelLoadingTest, MalformedShardIndex) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), DType::kF32, 1, dir.path()).ok());
  std::ofstream(dir.file("model.safetensors.index.json"))
      << R"({"weight_map": {"a": "../../etc/passwd"}})";
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("not a plain file name"));
  std::ofstream(dir.file("model.safetensors.index.json"))
      << R"({"weight_map": {"lm_head.weight": "model.safetensors"}})";
  EXPECT_THAT(LoadModel(dir.path()).status().message(), HasSubstr("does not hold it"));
}

}  // namespace
}  // namespace mambaserve
