#include "engine/testing/safetensors_writer.h"

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                              DType dtype,
                              const std::function<void(size_t, std::span<float>)>& fill) {
  // nlohmann::ordered_json keeps insertion order, so offsets ascend through the file.
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  std::vector<uint64_t> numels;
  for (const TensorSpec& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    numels.push_back(numel);
    const uint64_t bytes = numel * DTypeSize(dtype);
    header[t.name] = {{"dtype", std::string(DTypeName(dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as Hugging Face's writer does.
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');

  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file)
    return absl::InternalError(absl::StrCat(path, ": cannot create (", std::strerror(errno), ")"));
  unsigned char len_bytes[8];
  const uint64_t len = header_text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));
  bool ok =
      std::fwrite(len_bytes, 1, 8, file.get()) == 8 &&
      std::fwrite(header_text.data(), 1, header_text.size(), file.get()) == header_text.size();

  std::vector<float> values;
  std::vector<uint16_t> halves;
  for (size_t i = 0; ok && i < tensors.size(); ++i) {
    values.assign(numels[i], 0.0f);
    fill(i, std::span<float>(values));
    if (dtype == DType::kF32) {
      ok = std::fwrite(values.data(), 4, values.size(), file.get()) == values.size();
    } else {
      halves.resize(values.size());
      for (size_t j = 0; j < values.size(); ++j)
        halves[j] = dtype == DType::kBF16 ? F32ToBf16(values[j]) : F32ToF16(values[j]);
      ok = std::fwrite(halves.data(), 2, halves.size(), file.get()) == halves.size();
    }
  }
  if (!ok || std::fflush(file.get()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": write failed (", std::strerror(errno), ")"));
  }
  return absl::OkStatus();
}

}  // namespace mambaserve
