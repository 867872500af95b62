// The assembler copies each file in with .incbin; CMake passes the directory and a hash of the
// contents, and re-configures when a file changes, so the hash (in this file's preprocessed text)
// also tells a compiler cache that the object is stale.
#include "server/cli/default_model_data.h"

#include <array>

#if !defined(MAMBASERVE_DEFAULT_MODEL_DIR) || !defined(MAMBASERVE_DEFAULT_MODEL_HASH)
#error "the build passes MAMBASERVE_DEFAULT_MODEL_DIR and MAMBASERVE_DEFAULT_MODEL_HASH"
#endif

#define MAMBASERVE_EMBED(symbol, file)                   \
  asm(".pushsection .rodata\n"                           \
      ".balign 64\n"                                     \
      ".global " #symbol "_begin\n" #symbol              \
      "_begin:\n"                                        \
      ".incbin \"" MAMBASERVE_DEFAULT_MODEL_DIR "/" file \
      "\"\n"                                             \
      ".global " #symbol "_end\n" #symbol                \
      "_end:\n"                                          \
      ".popsection\n");                                  \
  extern "C" const unsigned char symbol##_begin[];       \
  extern "C" const unsigned char symbol##_end[]

MAMBASERVE_EMBED(mambaserve_default_config, "config.json");
MAMBASERVE_EMBED(mambaserve_default_weights, "model.safetensors");
MAMBASERVE_EMBED(mambaserve_default_tokenizer, "tokenizer.json");

namespace mambaserve {
namespace {

std::span<const unsigned char> Bytes(const unsigned char* begin, const unsigned char* end) {
  return {begin, static_cast<size_t>(end - begin)};
}

}  // namespace

std::span<const EmbeddedFile> DefaultModelFiles() {
  static const std::array<EmbeddedFile, 3> files = {{
      {"config.json", Bytes(mambaserve_default_config_begin, mambaserve_default_config_end)},
      {"model.safetensors",
       Bytes(mambaserve_default_weights_begin, mambaserve_default_weights_end)},
      {"tokenizer.json",
       Bytes(mambaserve_default_tokenizer_begin, mambaserve_default_tokenizer_end)},
  }};
  return files;
}

std::string_view DefaultModelContentHash() { return MAMBASERVE_DEFAULT_MODEL_HASH; }

}  // namespace mambaserve
