// The system Abseil is built with its own string_view type, so std::string_view does not convert
// implicitly into absl::StrCat arguments or heterogeneous hash-map lookups.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace mambaserve {

inline absl::string_view ToAbsl(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace mambaserve
