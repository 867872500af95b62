#include "server/cli/model_tokenizer.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/testing/bpe_tokenizer_writer.h"
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

}  // namespace mambaserve
