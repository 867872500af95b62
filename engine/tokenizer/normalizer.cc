#include "engine/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/json_util.h"

namespace mambaserve {
namespace {

absl::Status AppendSteps(const nlohmann::json& config, std::string_view path,
                         std::vector<int>& steps) {
  if (config.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::string type, GetString(config, "type", path));
  if (type == "NFC") {
    steps.push_back(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  } else if (type == "NFD") {
    steps.push_back(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  } else if (type == "NFKC") {
    steps.push_back(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  } else if (type == "NFKD") {
    steps.push_back(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  } else if (type == "Sequence") {
    ASSIGN_OR_RETURN(const nlohmann::json* list, GetMember(config, "normalizers", path));
    if (!list->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: ", ToAbsl(path), ".normalizers must be an array"));
    }
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(
          AppendSteps((*list)[i], absl::StrCat(ToAbsl(path), ".normalizers[", i, "]"), steps));
    }
  } else {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported normalizer type \"",
                                                 type, "\" at ", ToAbsl(path)));
  }
  return absl::OkStatus();
}

bool IsAscii(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Normalizer> Normalizer::FromJson(const nlohmann::json& config) {
  Normalizer normalizer;
  RETURN_IF_ERROR(AppendSteps(config, "normalizer", normalizer.steps_));
  return normalizer;
}

absl::StatusOr<std::string> Normalizer::Normalize(std::string_view text) const {
  std::string result(text);
  // ASCII is invariant under every normalization form; skipping it keeps the common case cheap.
  if (steps_.empty() || IsAscii(text)) return result;
  for (const int options : steps_) {
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t length =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(result.data()),
                     static_cast<utf8proc_ssize_t>(result.size()), &mapped,
                     static_cast<utf8proc_option_t>(options));
    if (length < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("normalization failed: ", utf8proc_errmsg(length)));
    }
    result.assign(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
    std::free(mapped);
  }
  return result;
}

}  // namespace mambaserve
