// Non-throwing, type-checked access to tokenizer.json fields. Every error names the field path
// so a malformed file can be fixed from the message alone.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

// Returns the member `key` of object `object` (at `path`), or NotFound/InvalidArgument.
absl::StatusOr<const nlohmann::json*> GetMember(const nlohmann::json& object, std::string_view key,
                                                std::string_view path);
// Like GetMember but returns nullptr when the member is absent or null.
absl::StatusOr<const nlohmann::json*> GetOptionalMember(const nlohmann::json& object,
                                                        std::string_view key,
                                                        std::string_view path);
absl::StatusOr<std::string> GetString(const nlohmann::json& object, std::string_view key,
                                      std::string_view path);
// Absent or null members take `default_value`.
absl::StatusOr<bool> GetBool(const nlohmann::json& object, std::string_view key,
                             std::string_view path, bool default_value);

}  // namespace mambaserve
