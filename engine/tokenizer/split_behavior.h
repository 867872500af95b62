// How a pre-tokenizer turns pattern matches into pieces (the reference implementation's
// SplitDelimiterBehavior), shared by Split, Punctuation and Digits.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mambaserve {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Parses the tokenizer.json spelling ("Removed", "Isolated", ...); `path` names the field.
absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name, std::string_view path);

// A span of the piece being split; consecutive spans cover the whole piece.
struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Appends the non-empty sub-pieces of `piece` to `out` according to `behavior`.
void ApplySplitBehavior(std::string_view piece, const std::vector<Span>& spans,
                        SplitBehavior behavior, std::vector<std::string>& out);

}  // namespace mambaserve
