// Deterministic random Unicode text for property tests, the fuzz driver and the benchmark:
// every major script, emoji sequences (ZWJ, skin tones, flags), combining marks, whitespace runs,
// digit runs, punctuation runs and special-token spellings.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace mambaserve::testing {

class RandomTextGenerator {
 public:
  explicit RandomTextGenerator(uint32_t seed) : rng_(seed) {}
  // A string of up to `max_parts` random fragments.
  std::string Next(int max_parts = 30);
  // Special-token spellings are included only when enabled (they decode back as written but are
  // cut out before normalization, so they are kept out of NFC round-trip checks).
  void set_include_special_tokens(bool include) { include_special_tokens_ = include; }

 private:
  std::mt19937 rng_;
  bool include_special_tokens_ = false;
};

// Well-formed UTF-8 encoding of one code point.
std::string CodePointToUtf8(char32_t cp);
// Unicode NFC (via utf8proc) of valid UTF-8 text.
std::string Nfc(const std::string& text);
// True when `text` is well-formed UTF-8.
bool IsValidUtf8(const std::string& text);

}  // namespace mambaserve::testing
