#include "server/cli/tokenize_command.h"

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/safetensors.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/cli/command_line.h"

namespace mambaserve {
namespace {

constexpr char kUsage[] =
    "usage: mambaserve tokenize --tokenizer FILE --text-file F --json OUT\n"
    "       mambaserve tokenize --tokenizer FILE --decode --ids 1,2,3 --json OUT\n";

absl::Status Run(int argc, char** argv) {
  ASSIGN_OR_RETURN(
      const CommandLine cl,
      CommandLine::Parse(argc, argv, {"tokenizer", "text-file", "json", "ids"}, {"decode"}));
  ASSIGN_OR_RETURN(const std::string tokenizer_path, cl.Require("tokenizer"));
  ASSIGN_OR_RETURN(const std::string json_out, cl.Require("json"));
  const bool decode = cl.Has("decode");
  if (decode && !cl.Has("ids")) return absl::InvalidArgumentError("--decode needs --ids");
  if (!decode && !cl.Has("text-file")) {
    return absl::InvalidArgumentError("--text-file is required (or --decode --ids)");
  }
  ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromFile(tokenizer_path));
  nlohmann::json result;
  if (decode) {
    ASSIGN_OR_RETURN(const std::vector<int32_t> ids, ParseIdList(*cl.Get("ids")));
    ASSIGN_OR_RETURN(result["text"], tokenizer->Decode(ids));
  } else {
    const std::string text_file = *cl.Get("text-file");
    ASSIGN_OR_RETURN(const std::string text, ReadTextFile(text_file));
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(),
                          absl::StrCat(text_file, ": ", ids.status().message()));
    }
    result["ids"] = *ids;
  }
  // Decoded text is always valid UTF-8, so the replace handler never fires; it keeps dump()
  // from throwing regardless.
  return WriteOutputFile(
      json_out, result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace

int RunTokenizeCommand(int argc, char** argv) {
  const absl::Status status = Run(argc, argv);
  if (status.ok()) return 0;
  std::cerr << "mambaserve tokenize: " << status.message() << "\n";
  if (absl::IsInvalidArgument(status) && status.message().find("--") != absl::string_view::npos) {
    std::cerr << kUsage;
  }
  return 1;
}

}  // namespace mambaserve
