// CreateBackend's device policy: --backend auto falls back to the CPU (with a reason) when the
// CUDA module or a GPU is missing; --backend cuda then fails with FAILED_PRECONDITION.
#include "engine/backend_factory.h"

#include <cstdlib>

#include "engine/backend/backend.h"
#include "engine/testing/random_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

class BackendFactoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelConfig config = *PresetConfig("tiny", ModelType::kMamba);
    ASSERT_TRUE(WriteRandomModel(config, DType::kF32, 3, dir_.path()).ok());
    auto model = LoadModel(dir_.path());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    const char* old = std::getenv("MAMBASERVE_CUDA_MODULE");
    if (old != nullptr) saved_env_ = old;
  }
  void TearDown() override {
    if (saved_env_.has_value()) {
      setenv("MAMBASERVE_CUDA_MODULE", saved_env_->c_str(), 1);
    } else {
      unsetenv("MAMBASERVE_CUDA_MODULE");
    }
  }
  BackendOptions Options(BackendKind kind) const {
    BackendOptions options;
    options.kind = kind;
    options.num_slots = 2;
    options.num_threads = 1;
    return options;
  }

  testing::TempDir dir_;
  std::shared_ptr<const Model> model_;
  std::optional<std::string> saved_env_;
};

TEST_F(BackendFactoryTest, CpuIsAlwaysAvailable) {
  std::string reason = "stale";
  auto backend = CreateBackend(model_, Options(BackendKind::kCpu), &reason);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->info().name, "cpu");
  EXPECT_TRUE(reason.empty());
}

#ifdef MAMBASERVE_CUDA_MODULE_PATH
// The real module, built here. On a machine without a GPU (CI) it loads, reports "no device", and
// auto mode picks the CPU; on a GPU machine these checks do not apply.
TEST_F(BackendFactoryTest, AutoFallsBackToCpuWhenTheModuleFindsNoDevice) {
  setenv("MAMBASERVE_CUDA_MODULE", MAMBASERVE_CUDA_MODULE_PATH, 1);
  std::string reason;
  auto backend = CreateBackend(model_, Options(BackendKind::kAuto), &reason);
  ASSERT_TRUE(backend.ok()) << backend.status();
  if ((*backend)->info().name == "cuda")
    GTEST_SKIP() << "a GPU is present: auto chose " << (*backend)->info().device;
  EXPECT_EQ((*backend)->info().name, "cpu");
  EXPECT_THAT(reason, HasSubstr("no usable CUDA device"));

  auto cuda = CreateBackend(model_, Options(BackendKind::kCuda));
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cuda.status().message(), HasSubstr("no usable CUDA device"));
}
#endif

TEST_F(BackendFactoryTest, AutoFallsBackToCpuWhenTheModuleIsMissing) {
  // A path that names a file which does not exist is skipped; the other candidates (next to the
  // test binary, ../kernels, ../lib, the loader path) do not hold the module in the test tree.
  setenv("MAMBASERVE_CUDA_MODULE", "/nonexistent/libmambaserve_cuda.so", 1);
  std::string reason;
  auto backend = CreateBackend(model_, Options(BackendKind::kAuto), &reason);
  ASSERT_TRUE(backend.ok()) << backend.status();
  if ((*backend)->info().name == "cuda") GTEST_SKIP() << "the module is on the loader path here";
  EXPECT_EQ((*backend)->info().name, "cpu");
  EXPECT_FALSE(reason.empty());

  auto cuda = CreateBackend(model_, Options(BackendKind::kCuda));
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cuda.status().message(), HasSubstr("CUDA backend"));
}

}  // namespace
}  // namespace mambaserve
