#include "engine/tokenizer/json_util.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/absl_compat.h"

namespace mambaserve {

absl::StatusOr<const nlohmann::json*> GetOptionalMember(const nlohmann::json& object,
                                                        std::string_view key,
                                                        std::string_view path) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", ToAbsl(path),
                                                   " must be an object, got ", object.type_name()));
  }
  const auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<const nlohmann::json*> GetMember(const nlohmann::json& object, std::string_view key,
                                                std::string_view path) {
  ASSIGN_OR_RETURN(const nlohmann::json* member, GetOptionalMember(object, key, path));
  if (member == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: missing field ", ToAbsl(path), ".", ToAbsl(key)));
  }
  return member;
}

absl::StatusOr<std::string> GetString(const nlohmann::json& object, std::string_view key,
                                      std::string_view path) {
  ASSIGN_OR_RETURN(const nlohmann::json* member, GetMember(object, key, path));
  if (!member->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", ToAbsl(path), ".",
                                                   ToAbsl(key), " must be a string, got ",
                                                   member->type_name()));
  }
  return member->get_ref<const std::string&>();
}

absl::StatusOr<bool> GetBool(const nlohmann::json& object, std::string_view key,
                             std::string_view path, bool default_value) {
  ASSIGN_OR_RETURN(const nlohmann::json* member, GetOptionalMember(object, key, path));
  if (member == nullptr) return default_value;
  if (!member->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", ToAbsl(path), ".",
                                                   ToAbsl(key), " must be a boolean, got ",
                                                   member->type_name()));
  }
  return member->get<bool>();
}

}  // namespace mambaserve
