// IncrementalDetokenizer (declared in tokenizer.h). Decode() repairs the concatenated bytes of
// all tokens; repairing a prefix gives the same result as long as an unfinished (but so far
// valid) trailing character is held back, so each chunk is final and valid UTF-8.
#include "engine/base/status_macros.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace mambaserve {

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  RETURN_IF_ERROR(tokenizer_.AppendTokenBytesOf(id, pending_));
  std::string text;
  const size_t consumed = AppendUtf8Lossy(pending_, /*hold_incomplete_tail=*/true, text);
  pending_.erase(0, consumed);
  return text;
}

std::string IncrementalDetokenizer::Flush() {
  std::string text;
  AppendUtf8Lossy(pending_, /*hold_incomplete_tail=*/false, text);
  pending_.clear();
  return text;
}

}  // namespace mambaserve
