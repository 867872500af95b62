// Pre-tokenizers from tokenizer.json ("pre_tokenizer" field): they cut normalized text into the
// words BPE sees. Each one refines the pieces produced by the previous one.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

class PreTokenizer {
 public:
  // Returns nullptr for a null config (the whole text is one word).
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& config);

  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces; empty pieces are dropped.
  virtual void PreTokenize(std::vector<std::string>& pieces) const = 0;
};

}  // namespace mambaserve
