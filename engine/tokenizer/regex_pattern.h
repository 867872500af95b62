// Regular-expression splitting with the semantics of the reference implementation, which runs
// Oniguruma. Patterns are translated to RE2 (Unicode-aware `\s`, `\d`, `\w`); constructs RE2
// cannot express, such as lookaround, are rejected, except for the GPT-2 pattern whose one
// lookahead (`\s+(?!\S)`) is emulated.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/split_behavior.h"
#include "re2/re2.h"

namespace mambaserve {

// The ByteLevel pre-tokenizer's pattern.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class RegexPattern {
 public:
  // `pattern` uses Oniguruma syntax, as written in tokenizer.json.
  static absl::StatusOr<std::unique_ptr<RegexPattern>> FromOniguruma(std::string_view pattern);
  // Matches `literal` verbatim.
  static absl::StatusOr<std::unique_ptr<RegexPattern>> FromLiteral(std::string_view literal);
  // The shared GPT-2 pattern instance.
  static const RegexPattern& Gpt2();

  // Appends spans covering `text`: the matches (non-overlapping, leftmost-first) and the gaps.
  void FindSpans(std::string_view text, std::vector<Span>& spans) const;

 private:
  RegexPattern(std::unique_ptr<RE2> re2, bool is_gpt2) : re2_(std::move(re2)), is_gpt2_(is_gpt2) {}
  void FindGpt2Spans(std::string_view text, std::vector<Span>& spans) const;

  std::unique_ptr<RE2> re2_;
  bool is_gpt2_;
};

}  // namespace mambaserve
