// UTF-8 validation, decoding and lossy repair with the same rules as Rust's
// String::from_utf8_lossy (one U+FFFD per maximal invalid subpart), which the reference
// tokenizer implementation uses when decoding ids back to text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace mambaserve {

inline constexpr char kReplacementCharacter[] = "\xEF\xBF\xBD";  // U+FFFD

// Returns InvalidArgumentError naming the byte offset of the first ill-formed sequence.
absl::Status ValidateUtf8(std::string_view text);

// Decodes the code point starting at `text[pos]` (which must be valid UTF-8) and advances `pos`.
char32_t DecodeUtf8(std::string_view text, size_t& pos);

// Number of bytes of the (valid) UTF-8 sequence whose lead byte is `lead`.
inline size_t Utf8Length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

void AppendUtf8(char32_t code_point, std::string& out);

// Appends `bytes` to `out`, replacing each maximal invalid subpart with U+FFFD.
// When `hold_incomplete_tail` is true, a trailing sequence that is a valid but unfinished prefix
// of a character is not consumed; the function returns how many bytes were consumed.
size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string& out);

}  // namespace mambaserve
