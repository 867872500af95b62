// Text normalizers from tokenizer.json ("normalizer" field): Unicode normalization forms and
// sequences of them.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

class Normalizer {
 public:
  // A null config means "no normalization" and yields an empty chain.
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& config);

  // `text` must be valid UTF-8.
  absl::StatusOr<std::string> Normalize(std::string_view text) const;
  bool empty() const { return steps_.empty(); }

 private:
  // utf8proc option sets, one per normalization form in the chain.
  std::vector<int> steps_;
};

}  // namespace mambaserve
