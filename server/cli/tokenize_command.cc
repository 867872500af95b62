#include "server/cli/tokenize_command.h"

#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/safetensors.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/cli/flags.h"
#include "server/cli/output_file.h"

namespace mambaserve {
namespace {

struct TokenizeFlags {
  std::string tokenizer_path, text_file, json_out;
  std::vector<int32_t> ids;
  bool decode = false;

  void Declare(CLI::App& app) {
    app.add_option("--tokenizer", tokenizer_path, "FILE: tokenizer.json")->required();
    CLI::Option* text = app.add_option("--text-file", text_file, "F: the text to encode");
    CLI::Option* decoding = app.add_flag("--decode", decode, "decode --ids instead");
    CLI::Option* id_list = app.add_option("--ids", ids, "1,2,3: the ids to decode")
                               ->delimiter(',')
                               ->check(CLI::NonNegativeNumber);
    app.add_option("--json", json_out, "OUT: where the JSON goes (- for stdout)")->required();
    decoding->needs(id_list);
    id_list->needs(decoding);
    text->excludes(decoding);
  }
};

absl::Status Run(const TokenizeFlags& flags) {
  const bool decode = flags.decode;
  if (!decode && flags.text_file.empty()) {
    return absl::InvalidArgumentError("--text-file is required (or --decode --ids)");
  }
  const std::string& tokenizer_path = flags.tokenizer_path;
  ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromFile(tokenizer_path));
  nlohmann::json result;
  if (decode) {
    ASSIGN_OR_RETURN(result["text"], tokenizer->Decode(flags.ids));
  } else {
    const std::string& text_file = flags.text_file;
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
      flags.json_out, result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace

int RunTokenizeCommand(int argc, char** argv) {
  TokenizeFlags flags;
  CLI::App app{
      "Encodes a text file (no BOS/EOS), or decodes token ids, with a tokenizer.json; "
      "writes {\"ids\": [...]} or {\"text\": \"...\"}.",
      "mambaserve tokenize"};
  flags.Declare(app);
  if (std::optional<int> exit = ParseFlags(app, argc, argv)) return *exit;
  const absl::Status status = Run(flags);
  if (status.ok()) return 0;
  std::cerr << "mambaserve tokenize: " << status.message() << "\n";
  return 1;
}

}  // namespace mambaserve
