#include "tools/tokenize_command.h"

#include <cstdint>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/status_macros.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace mambaserve {
namespace {

constexpr char kUsage[] =
    "usage: mambaserve tokenize --tokenizer FILE --text-file F --json OUT\n"
    "       mambaserve tokenize --tokenizer FILE --decode --ids 1,2,3 --json OUT\n";

struct Options {
  std::string tokenizer;
  std::string text_file;
  std::string json_out;
  std::optional<std::string> ids;
  bool decode = false;
};

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--decode") {
      options.decode = true;
      continue;
    }
    std::string* target = flag == "--tokenizer"   ? &options.tokenizer
                          : flag == "--text-file" ? &options.text_file
                          : flag == "--json"      ? &options.json_out
                                                  : nullptr;
    if (flag == "--ids") {
      options.ids.emplace();
      target = &*options.ids;
    }
    if (target == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
    *target = argv[++i];
  }
  if (options.tokenizer.empty()) return absl::InvalidArgumentError("--tokenizer is required");
  if (options.json_out.empty()) return absl::InvalidArgumentError("--json is required");
  if (options.decode && !options.ids.has_value()) {
    return absl::InvalidArgumentError("--decode needs --ids");
  }
  if (!options.decode && options.text_file.empty()) {
    return absl::InvalidArgumentError("--text-file is required (or --decode --ids)");
  }
  return options;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& list) {
  std::vector<int32_t> ids;
  if (list.empty()) return ids;
  for (const absl::string_view field : absl::StrSplit(list, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(field, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--ids: \"", field, "\" is not an integer"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  ASSIGN_OR_RETURN(const Options options, ParseOptions(argc, argv));
  ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer,
                   Tokenizer::FromFile(options.tokenizer));
  nlohmann::json result;
  if (options.decode) {
    ASSIGN_OR_RETURN(const std::vector<int32_t> ids, ParseIds(*options.ids));
    ASSIGN_OR_RETURN(result["text"], tokenizer->Decode(ids));
  } else {
    ASSIGN_OR_RETURN(const std::string text, ReadFile(options.text_file));
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(),
                          absl::StrCat(options.text_file, ": ", ids.status().message()));
    }
    result["ids"] = *ids;
  }
  // Decoded text is always valid UTF-8, so the replace handler never fires; it keeps dump()
  // from throwing regardless.
  return WriteFile(options.json_out,
                   result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
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
