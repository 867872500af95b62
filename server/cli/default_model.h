// The default model `serve` runs without --model: kjv-mamba (models/kjv-mamba, a small Mamba
// trained on the King James Version), compiled into the binary so a fresh build serves real text
// with nothing to download or generate.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace mambaserve {

// Writes the embedded checkpoint (config.json, model.safetensors, tokenizer.json) into `dir`
// unless it is already there; atomically, so a half-written directory is never used.
absl::Status EnsureDefaultModel(const std::string& dir);

// $XDG_CACHE_HOME/mambaserve/kjv-mamba-<content hash>, else under ~/.cache (or the temp dir): a
// new build with a different default model never reuses the old one's files.
std::string DefaultModelCacheDir();

}  // namespace mambaserve
