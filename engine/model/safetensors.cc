#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace mambaserve {
namespace {

// A header larger than this is not a real checkpoint (HF caps it at 100 MB too).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status Invalid(absl::string_view file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::vector<TensorView>> ParseSafetensors(std::span<const unsigned char> image,
                                                         const std::string& file_name) {
  if (image.size() < 8) {
    return Invalid(file_name, absl::StrCat("truncated safetensors file (", image.size(),
                                           " bytes, need at least 8 for the header length)"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | image[i];
  if (header_len > kMaxHeaderBytes) {
    return Invalid(file_name, absl::StrCat("header length ", header_len, " exceeds the ",
                                           kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > image.size() - 8) {
    return Invalid(file_name, absl::StrCat("header length ", header_len, " runs past end of file (",
                                           image.size(), " bytes)"));
  }
  const auto* header_begin = reinterpret_cast<const char*>(image.data() + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len,
                                                /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Invalid(file_name, "malformed JSON header (expected an object of tensors)");
  }

  const unsigned char* data = image.data() + 8 + header_len;
  const uint64_t data_size = image.size() - 8 - header_len;
  std::vector<TensorView> views;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per tensor, for overlap checks
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = absl::StrCat("tensor \"", name, "\"");
    if (!entry.is_object())
      return Invalid(file_name, absl::StrCat(where, ": entry is not an object"));
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string() || shape_it == entry.end() ||
        !shape_it->is_array() || offsets_it == entry.end() || !offsets_it->is_array() ||
        offsets_it->size() != 2) {
      return Invalid(file_name, absl::StrCat(where,
                                             ": needs dtype (string), shape (array) and "
                                             "data_offsets ([begin, end])"));
    }
    TensorView view;
    view.name = name;
    view.file = std::string(file_name);
    auto dtype = ParseSafetensorsDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return Invalid(file_name, absl::StrCat(where, ": ", dtype.status().message()));
    view.dtype = *dtype;

    // Element count with overflow protection: no real tensor has more than 2^48 elements.
    uint64_t numel = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned()) {
        return Invalid(file_name,
                       absl::StrCat(where, ": shape entries must be non-negative integers"));
      }
      const uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > (1ull << 48) / d) {
        return Invalid(file_name, absl::StrCat(where, ": shape is implausibly large"));
      }
      numel *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    const auto& begin_json = (*offsets_it)[0];
    const auto& end_json = (*offsets_it)[1];
    if (!begin_json.is_number_unsigned() || !end_json.is_number_unsigned()) {
      return Invalid(file_name,
                     absl::StrCat(where, ": data_offsets must be non-negative integers"));
    }
    const uint64_t begin = begin_json.get<uint64_t>();
    const uint64_t end = end_json.get<uint64_t>();
    if (begin > end || end > data_size) {
      return Invalid(file_name,
                     absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                  ") out of bounds of the ", data_size, "-byte data section"));
    }
    const uint64_t expected = numel * DTypeSize(view.dtype);
    if (end - begin != expected) {
      return Invalid(file_name, absl::StrCat(where, ": data_offsets span ", end - begin,
                                             " bytes but ", DTypeName(view.dtype), " ",
                                             view.ShapeString(), " needs ", expected));
    }
    view.data = data + begin;
    view.nbytes = end - begin;
    ranges.emplace_back(begin, end);
    views.push_back(std::move(view));
  }

  std::vector<size_t> order(views.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  // Compare each range with the furthest end seen so far (not just its predecessor), so an empty
  // tensor sorted between two overlapping ones cannot hide the overlap.
  size_t furthest = order.empty() ? 0 : order[0];
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& cur = ranges[order[i]];
    if (cur.first != cur.second && cur.first < ranges[furthest].second) {
      return Invalid(file_name,
                     absl::StrCat("tensors \"", views[furthest].name, "\" and \"",
                                  views[order[i]].name, "\" overlap in the data section"));
    }
    if (cur.second > ranges[furthest].second) furthest = order[i];
  }
  return views;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const unsigned char* data = nullptr;
  if (size > 0) {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed (", std::strerror(errno), ")"));
    }
    data = static_cast<const unsigned char*>(addr);
  }
  ::close(fd);  // the mapping keeps the file alive
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
}

bool MappedFile::Contains(const void* data, size_t bytes) const {
  const auto* p = static_cast<const unsigned char*>(data);
  return data_ != nullptr && p >= data_ && bytes <= size_ &&
         p - data_ <= static_cast<ptrdiff_t>(size_ - bytes);
}

void MappedFile::ReleasePages(const void* data, size_t bytes) const {
  if (!Contains(data, bytes)) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  // Whole pages only: a neighbouring tensor's bytes on a shared page stay resident. The mapping is
  // read-only and file-backed, so dropped pages come back from the file, never zeroed.
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void Checkpoint::ReleasePages(const void* data, size_t bytes) const {
  for (const auto& file : files_) file->ReleasePages(data, bytes);
}

void Checkpoint::ReleaseAllPages() const {
  for (const auto& file : files_) file->ReleasePages(file->bytes().data(), file->bytes().size());
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(
    std::string_view text, const std::string& file_name) {
  nlohmann::json index = nlohmann::json::parse(text, nullptr, false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": malformed index (expected a \"weight_map\" object)"));
  }
  std::map<std::string, std::string> shard_of;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name, ": weight_map[\"", tensor, "\"] is not a file name"));
    }
    std::string shard_name = shard.get<std::string>();
    // Shards live beside the index: no path may lead out of the checkpoint directory.
    if (shard_name.find('/') != std::string::npos || shard_name == ".." || shard_name == "." ||
        shard_name.empty() || shard_name.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name, ": shard name \"", shard_name, "\" is not a plain file name"));
    }
    shard_of[tensor] = std::move(shard_name);
  }
  return shard_of;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadTextFile(index_path.string()));
    ASSIGN_OR_RETURN(const auto expected_shard, ParseSafetensorsIndex(text, index_path.string()));
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : expected_shard) shards.insert(shard);
    for (const auto& shard : shards)
      RETURN_IF_ERROR(checkpoint->AddFile((fs::path(dir) / shard).string()));
    for (const auto& [tensor, shard] : expected_shard) {
      const TensorView* view = checkpoint->Find(tensor);
      if (view == nullptr || fs::path(view->file).filename() != shard) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": tensor \"", tensor,
                                                       "\" is listed in shard ", shard,
                                                       " but that shard does not hold it"));
      }
    }
  } else if (fs::exists(single_path, ec)) {
    RETURN_IF_ERROR(checkpoint->AddFile(single_path.string()));
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  return checkpoint;
}

absl::Status Checkpoint::AddFile(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  ASSIGN_OR_RETURN(auto views, ParseSafetensors(file->bytes(), path));
  for (auto& view : views) {
    if (tensors_.count(view.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", view.name, "\" also appears in ", tensors_[view.name].file));
    }
    std::string name = view.name;
    tensors_.emplace(std::move(name), std::move(view));
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

const TensorView* Checkpoint::Find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace mambaserve
