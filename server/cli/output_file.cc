#include "server/cli/output_file.h"

#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace mambaserve {

absl::Status WriteOutputFile(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::cout << text;
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

}  // namespace mambaserve
