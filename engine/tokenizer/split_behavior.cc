#include "engine/tokenizer/split_behavior.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"

namespace mambaserve {

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name, std::string_view path) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: unknown split behavior \"",
                                                 ToAbsl(name), "\" at ", ToAbsl(path)));
}

void ApplySplitBehavior(std::string_view piece, const std::vector<Span>& spans,
                        SplitBehavior behavior, std::vector<std::string>& out) {
  // Each merged group is a [begin, end) range; groups are emitted unless removed or empty.
  struct Group {
    size_t begin;
    size_t end;
  };
  std::vector<Group> groups;
  groups.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) groups.push_back({s.begin, s.end});
      }
      break;
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) groups.push_back({s.begin, s.end});
      break;
    case SplitBehavior::kContiguous: {
      // Consecutive spans with the same match state join (starting state: "not a match").
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !groups.empty()) {
          groups.back().end = s.end;
        } else {
          groups.push_back({s.begin, s.end});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !groups.empty()) {
          groups.back().end = s.end;
        } else {
          groups.push_back({s.begin, s.end});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      // Walks backwards so a match joins the span that follows it.
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !groups.empty()) {
          groups.back().begin = it->begin;
        } else {
          groups.push_back({it->begin, it->end});
        }
        previous_match = it->is_match;
      }
      std::reverse(groups.begin(), groups.end());
      break;
    }
  }
  for (const Group& g : groups) {
    if (g.end > g.begin) out.emplace_back(piece.substr(g.begin, g.end - g.begin));
  }
}

}  // namespace mambaserve
