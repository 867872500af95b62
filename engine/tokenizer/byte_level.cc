#include "engine/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "engine/tokenizer/utf8.h"

namespace mambaserve {
namespace {

// Bytes that are printable in Latin-1 keep their code point; the others are shifted to
// U+0100 and up, in byte order. The highest code point used is U+0143.
constexpr char32_t kMaxAlphabetCodePoint = 0x143;

struct Tables {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, kMaxAlphabetCodePoint + 1> code_point_to_byte;

  Tables() {
    code_point_to_byte.fill(-1);
    char32_t next_shifted = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next_shifted++;
      AppendUtf8(cp, byte_to_utf8[b]);
      code_point_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& GetTables() {
  static const Tables* const tables = new Tables();
  return *tables;
}

}  // namespace

void AppendByteLevel(std::string_view bytes, std::string& out) {
  const Tables& tables = GetTables();
  for (const char c : bytes) out.append(tables.byte_to_utf8[static_cast<unsigned char>(c)]);
}

void AppendTokenBytes(std::string_view token, std::string& out) {
  const Tables& tables = GetTables();
  const size_t start = out.size();
  size_t pos = 0;
  while (pos < token.size()) {
    const char32_t cp = DecodeUtf8(token, pos);
    if (cp > kMaxAlphabetCodePoint || tables.code_point_to_byte[cp] < 0) {
      out.resize(start);
      out.append(token);
      return;
    }
    out.push_back(static_cast<char>(tables.code_point_to_byte[cp]));
  }
}

}  // namespace mambaserve
