#include "tests/engine/tokenizer/random_text.h"

#include <utf8proc.h>

#include <cstdlib>
#include <utility>

#include "engine/tokenizer/utf8.h"

namespace mambaserve::testing {
namespace {

// Code point ranges sampled uniformly (surrogates never fall inside them).
constexpr std::pair<char32_t, char32_t> kRanges[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0x30, 0x39},     {0x20, 0x2F},      {0x3A, 0x40},
    {0x5B, 0x60},       {0x7B, 0x7E},       {0xA0, 0xFF},     {0x100, 0x17F},    {0x300, 0x36F},
    {0x370, 0x3FF},     {0x400, 0x4FF},     {0x590, 0x5FF},   {0x600, 0x6FF},    {0x660, 0x669},
    {0x900, 0x97F},     {0x966, 0x96F},     {0xE00, 0xE7F},   {0x1100, 0x11FF},  {0x2000, 0x206F},
    {0x2070, 0x209F},   {0x20A0, 0x20CF},   {0x2150, 0x218F}, {0x2460, 0x24FF},  {0x3000, 0x303F},
    {0x3040, 0x30FF},   {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3}, {0xFF00, 0xFFEF},  {0x1F300, 0x1F64F},
    {0x1F900, 0x1F9FF}, {0x1D400, 0x1D4FF}, {0xFE00, 0xFE0F}, {0x10000, 0x1007F}};
const char* const kWhitespace[] = {"\t",     "\n",     "\r",     " ",        "  ", "   ",
                                   "\u00a0", "\u3000", "\u2009", "\xc2\x85", "\v", "\f",
                                   "\u2028", "\r\n",   " \n ",   "\t\t  \n"};
const char* const kSpecial[] = {"<|endoftext|>", "<|padding|>", ">>TITLE<<", "<|im_start|>"};
const char* const kEmoji[] = {"\U0001F469\u200D\U0001F4BB",  // woman technologist (ZWJ)
                              "\U0001F44D\U0001F3FD",        // thumbs up, skin tone
                              "\U0001F468\u200D\U0001F469\u200D\U0001F467",  // family
                              "\u2764\uFE0F",                       // heart + variation selector
                              "\U0001F1FA\U0001F1F8",               // flag
                              "\U0001F3F3\uFE0F\u200D\U0001F308"};  // rainbow flag
const char* const kWords[] = {"Hello",
                              "world",
                              "don't",
                              "I'll",
                              "'s",
                              "'RE",
                              "3.14159",
                              "1234567",
                              "x=y+1;",
                              "fn main() {",
                              "    return 0;",
                              "日本語",
                              "Привет",
                              "مرحبا",
                              "नमस्ते",
                              "café",
                              "e\u0301",
                              "ñ",
                              "ﬁ",
                              "Å",
                              "Ω",
                              "½",
                              "²³",
                              "١٢٣",
                              "한국어",
                              "ไทย",
                              "Ελληνικά",
                              "עברית",
                              "ক্ষ"};
const char* const kPunctuation = "!?.,;:-_()[]{}\"'";

}  // namespace

std::string CodePointToUtf8(char32_t cp) {
  std::string out;
  AppendUtf8(cp, out);
  return out;
}

std::string RandomTextGenerator::Next(int max_parts) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); };
  std::string text;
  const int parts = uniform(0, max_parts);
  for (int p = 0; p < parts; ++p) {
    const int kind = uniform(0, 99);
    if (kind < 35) {
      const auto& [lo, hi] = kRanges[uniform(0, std::size(kRanges) - 1)];
      for (int n = uniform(1, 6); n > 0; --n) {
        text += CodePointToUtf8(static_cast<char32_t>(uniform(lo, hi)));
      }
    } else if (kind < 55) {
      text += kWhitespace[uniform(0, std::size(kWhitespace) - 1)];
    } else if (kind < 75) {
      text += kWords[uniform(0, std::size(kWords) - 1)];
    } else if (kind < 82) {
      text += kEmoji[uniform(0, std::size(kEmoji) - 1)];
    } else if (kind < 86) {
      if (include_special_tokens_) {
        // A space after the token keeps a following combining mark from attaching to it.
        text += kSpecial[uniform(0, std::size(kSpecial) - 1)];
        text += ' ';
      }
    } else if (kind < 93) {
      for (int n = uniform(1, 9); n > 0; --n) text += static_cast<char>('0' + uniform(0, 9));
    } else {
      for (int n = uniform(1, 5); n > 0; --n) {
        text += kPunctuation[uniform(0, 15)];
      }
      if (uniform(0, 1)) text += "«»—…¿¡";
    }
  }
  return text;
}

std::string Nfc(const std::string& text) {
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &mapped,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (length < 0) std::abort();
  std::string result(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
  std::free(mapped);
  return result;
}

bool IsValidUtf8(const std::string& text) { return ValidateUtf8(text).ok(); }

}  // namespace mambaserve::testing
