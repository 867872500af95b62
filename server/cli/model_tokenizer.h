// tokenizer.json for generated models, and the default model `serve` runs without --model.
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

// The embedded default: the "tiny" Mamba preset, f32, seed 0, with its trained tokenizer, written
// once into `dir` (atomically: a half-written directory is never used).
absl::Status EnsureDefaultModel(const std::string& dir);

// $XDG_CACHE_HOME/mambaserve/default-tiny, else ~/.cache/mambaserve/default-tiny.
std::string DefaultModelCacheDir();

}  // namespace mambaserve
