// Memory-mapped safetensors files and the checkpoint directories built from them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace mambaserve {

// A tensor inside a mapped file: no copy is made; valid while its Checkpoint lives.
struct TensorView {
  std::string name;
  std::string file;  // for error messages
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const unsigned char* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  std::string ShapeString() const;  // "[2, 3]"
};

// Parses and validates a whole safetensors image (8-byte little-endian header length, JSON header,
// data). Every offset is bounds- and overlap-checked; errors name `file_name` and the tensor.
absl::StatusOr<std::vector<TensorView>> ParseSafetensors(std::span<const unsigned char> image,
                                                         const std::string& file_name);

// model.safetensors.index.json: each tensor's shard, a plain file name beside the index.
absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(
    std::string_view text, const std::string& file_name);

// A read-only memory mapping of one file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const unsigned char> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  bool Contains(const void* data, size_t bytes) const;
  // Drops the resident pages wholly inside [data, data + bytes), which must be in this mapping:
  // they stop counting in the process's memory and are read from the file again if touched.
  void ReleasePages(const void* data, size_t bytes) const;

 private:
  MappedFile(std::string path, const unsigned char* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const unsigned char* data_;
  size_t size_;
};

// All tensors of a Hugging Face checkpoint directory: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json`.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  // nullptr when absent.
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }
  const std::string& dir() const { return dir_; }

  // For a tensor copied or converted elsewhere: drops its resident pages
  // (MappedFile::ReleasePages). A no-op for memory the checkpoint does not map.
  void ReleasePages(const void* data, size_t bytes) const;
  void ReleaseAllPages() const;  // every file's, once the weights live elsewhere (a GPU)

 private:
  absl::Status AddFile(const std::string& path);

  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

// Reads a whole (small) text file such as config.json.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace mambaserve
