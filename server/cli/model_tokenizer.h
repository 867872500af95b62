// tokenizer.json for generated models.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace mambaserve {

// Writes `dir`/tokenizer.json: a copy of `source` (checked: it loads and its vocabulary fits
// `vocab_size`), else for vocab_size <= 4096 a byte-level BPE trained on the embedded sample, else
// nothing.
absl::Status WriteModelTokenizer(int64_t vocab_size, const std::optional<std::string>& source,
                                 const std::string& dir);

}  // namespace mambaserve
