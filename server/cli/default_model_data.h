// The default model's files as bytes in the binary (default_model_data.cc).
#pragma once

#include <span>
#include <string_view>

namespace mambaserve {

struct EmbeddedFile {
  std::string_view name;
  std::span<const unsigned char> bytes;
};

// config.json, model.safetensors, tokenizer.json, in the order they must be written (the tokenizer
// last: its presence marks a complete directory).
std::span<const EmbeddedFile> DefaultModelFiles();

// A hash of the files' contents, fixed when the build was configured.
std::string_view DefaultModelContentHash();

}  // namespace mambaserve
