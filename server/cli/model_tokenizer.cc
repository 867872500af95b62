#include "server/cli/model_tokenizer.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/testing/bpe_tokenizer_writer.h"
#include "engine/testing/random_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/cli/output_file.h"

namespace mambaserve {

absl::Status WriteModelTokenizer(int64_t vocab_size, const std::optional<std::string>& source,
                                 const std::string& dir) {
  const std::string target = (std::filesystem::path(dir) / "tokenizer.json").string();
  if (source.has_value()) {
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromFile(*source));
    if (tokenizer->vocab_size() > vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          *source, " has ", tokenizer->vocab_size(), " tokens; the model's vocabulary is ",
          vocab_size, " (pass --vocab ", tokenizer->vocab_size(), " or more)"));
    }
    std::error_code ec;
    std::filesystem::copy_file(*source, target, std::filesystem::copy_options::overwrite_existing,
                               ec);
    if (ec)
      return absl::InternalError(
          absl::StrCat("copying ", *source, " to ", target, ": ", ec.message()));
    return absl::OkStatus();
  }
  if (vocab_size > kMaxTrainedVocab) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string json, TrainByteLevelBpeJson(static_cast<int>(vocab_size)));
  return WriteOutputFile(target, json);
}

absl::Status EnsureDefaultModel(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "tokenizer.json")) return absl::OkStatus();  // written last
  ASSIGN_OR_RETURN(ModelConfig config, PresetConfig("tiny", ModelType::kMamba));
  const std::string scratch = absl::StrCat(dir, ".tmp-", getpid());
  std::error_code ec;
  fs::remove_all(scratch, ec);
  RETURN_IF_ERROR(WriteRandomModel(config, DType::kF32, /*seed=*/0, scratch));
  RETURN_IF_ERROR(WriteModelTokenizer(config.vocab_size, std::nullopt, scratch));
  fs::remove_all(dir, ec);
  fs::create_directories(fs::path(dir).parent_path(), ec);
  fs::rename(scratch, dir, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("moving the default model into ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

std::string DefaultModelCacheDir() {
  std::filesystem::path base;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg) {
    base = xdg;
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home) {
    base = std::filesystem::path(home) / ".cache";
  } else {
    base = std::filesystem::temp_directory_path();
  }
  return (base / "mambaserve" / "default-tiny").string();
}

}  // namespace mambaserve
