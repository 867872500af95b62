// Fuzz target for model.safetensors.index.json, which names the files a sharded checkpoint is read
// from. Properties: parsing never crashes; every shard name it accepts is a plain file name, so
// no index can lead the loader out of the model directory.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "engine/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto shards = mambaserve::ParseSafetensorsIndex(text, "model.safetensors.index.json");
  if (!shards.ok()) return 0;
  for (const auto& [tensor, shard] : *shards) {
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find_first_of(std::string_view("/\0", 2)) != std::string::npos) {
      std::abort();
    }
  }
  return 0;
}
