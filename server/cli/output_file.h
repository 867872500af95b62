// Where a subcommand's result goes: a file, or stdout for "-".
#pragma once

#include <string>

#include "absl/status/status.h"

namespace mambaserve {

// Writes `text` to `path` ("-" = stdout).
absl::Status WriteOutputFile(const std::string& path, const std::string& text);

}  // namespace mambaserve
