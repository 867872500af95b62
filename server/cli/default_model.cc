#include "server/cli/default_model.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/cli/default_model_data.h"

namespace mambaserve {

absl::Status EnsureDefaultModel(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "tokenizer.json")) return absl::OkStatus();  // written last
  const std::string scratch = absl::StrCat(dir, ".tmp-", getpid());
  std::error_code ec;
  fs::remove_all(scratch, ec);
  fs::create_directories(scratch, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", scratch, ": ", ec.message()));
  for (const EmbeddedFile& file : DefaultModelFiles()) {
    const fs::path path = fs::path(scratch) / file.name;
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(file.bytes.data()),
              static_cast<std::streamsize>(file.bytes.size()));
    out.close();
    if (!out) {
      fs::remove_all(scratch, ec);
      return absl::InternalError(absl::StrCat("writing ", path.string()));
    }
  }
  fs::remove_all(dir, ec);
  fs::create_directories(fs::path(dir).parent_path(), ec);
  fs::rename(scratch, dir, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove_all(scratch, ec);
    // Another process may have won the race with the same files: use its directory.
    if (fs::exists(fs::path(dir) / "tokenizer.json")) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("moving the default model into ", dir, ": ", why));
  }
  return absl::OkStatus();
}

std::string DefaultModelCacheDir() {
  std::filesystem::path base;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg) {
    base = xdg;
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home) {
    base = std::filesystem::path(home) / ".cache";
  } else {
    base = std::filesystem::temp_directory_path();
  }
  const std::string name = "kjv-mamba-" + std::string(DefaultModelContentHash().substr(0, 12));
  return (base / "mambaserve" / name).string();
}

}  // namespace mambaserve
