#include "engine/tokenizer/utf8.h"

#include "absl/strings/str_cat.h"

namespace mambaserve {
namespace {

enum class SequenceKind { kValid, kInvalid, kIncomplete };

struct Sequence {
  SequenceKind kind;
  size_t length;  // bytes of the valid sequence, or of the maximal invalid subpart
};

// Classifies the sequence starting at bytes[0] following Unicode's table of well-formed byte
// sequences (the second byte range depends on the lead byte).
Sequence NextSequence(const unsigned char* bytes, size_t size) {
  const unsigned char lead = bytes[0];
  if (lead < 0x80) return {SequenceKind::kValid, 1};
  size_t length;
  unsigned char second_low = 0x80, second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_low = 0xA0;
    if (lead == 0xED) second_high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_low = 0x90;
    if (lead == 0xF4) second_high = 0x8F;
  } else {
    return {SequenceKind::kInvalid, 1};
  }
  for (size_t i = 1; i < length; ++i) {
    if (i >= size) return {SequenceKind::kIncomplete, i};
    const unsigned char low = i == 1 ? second_low : 0x80;
    const unsigned char high = i == 1 ? second_high : 0xBF;
    if (bytes[i] < low || bytes[i] > high) return {SequenceKind::kInvalid, i};
  }
  return {SequenceKind::kValid, length};
}

}  // namespace

absl::Status ValidateUtf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    if (bytes[pos] < 0x80) {
      ++pos;
      continue;
    }
    const Sequence seq = NextSequence(bytes + pos, text.size() - pos);
    if (seq.kind != SequenceKind::kValid) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid UTF-8 in input text at byte offset ", pos));
    }
    pos += seq.length;
  }
  return absl::OkStatus();
}

char32_t DecodeUtf8(std::string_view text, size_t& pos) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  const unsigned char lead = bytes[0];
  if (lead < 0x80) {
    pos += 1;
    return lead;
  }
  if (lead < 0xE0) {
    pos += 2;
    return (char32_t{lead & 0x1Fu} << 6) | (bytes[1] & 0x3Fu);
  }
  if (lead < 0xF0) {
    pos += 3;
    return (char32_t{lead & 0x0Fu} << 12) | (char32_t{bytes[1] & 0x3Fu} << 6) | (bytes[2] & 0x3Fu);
  }
  pos += 4;
  return (char32_t{lead & 0x07u} << 18) | (char32_t{bytes[1] & 0x3Fu} << 12) |
         (char32_t{bytes[2] & 0x3Fu} << 6) | (bytes[3] & 0x3Fu);
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t AppendUtf8Lossy(std::string_view text, bool hold_incomplete_tail, std::string& out) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t pos = 0;
  size_t run_start = 0;  // start of the pending run of valid bytes, copied in one go
  while (pos < text.size()) {
    if (bytes[pos] < 0x80) {
      ++pos;
      continue;
    }
    const Sequence seq = NextSequence(bytes + pos, text.size() - pos);
    if (seq.kind == SequenceKind::kValid) {
      pos += seq.length;
      continue;
    }
    out.append(text.substr(run_start, pos - run_start));
    if (seq.kind == SequenceKind::kIncomplete && hold_incomplete_tail) return pos;
    out.append(kReplacementCharacter);
    pos += seq.length;
    run_start = pos;
  }
  out.append(text.substr(run_start, pos - run_start));
  return pos;
}

}  // namespace mambaserve
