#include "engine/tokenizer/regex_pattern.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/unicode_props.h"
#include "engine/tokenizer/utf8.h"

namespace mambaserve {
namespace {

// Oniguruma's Unicode classes (RE2's own `\s`, `\d`, `\w` are ASCII-only).
constexpr std::string_view kSpaceClassBody = R"(\t-\r\x{85}\p{Z})";
constexpr std::string_view kDigitClassBody = R"(\p{Nd})";
constexpr std::string_view kWordClassBody = R"(\p{L}\p{M}\p{N}\p{Pc})";

absl::StatusOr<std::string> TranslateToRe2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() * 2);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` just after '[' or '[^'
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      std::string_view body;
      bool negated = false;
      switch (e) {
        case 's':
          body = kSpaceClassBody;
          break;
        case 'S':
          body = kSpaceClassBody;
          negated = true;
          break;
        case 'd':
          body = kDigitClassBody;
          break;
        case 'D':
          body = kDigitClassBody;
          negated = true;
          break;
        case 'w':
          body = kWordClassBody;
          break;
        case 'W':
          body = kWordClassBody;
          negated = true;
          break;
        default:
          if (e >= '1' && e <= '9' && !in_class) {
            return absl::InvalidArgumentError(
                absl::StrCat("regex \"", ToAbsl(pattern), "\": backreferences are not supported"));
          }
          out.push_back('\\');
          out.push_back(e);
          continue;
      }
      if (in_class) {
        if (negated) {
          return absl::InvalidArgumentError(
              absl::StrCat("regex \"", ToAbsl(pattern), "\": negated class escape \\",
                           std::string(1, e), " inside [...] is not supported"));
        }
        out.append(body);
      } else {
        absl::StrAppend(&out, negated ? "[^" : "[", ToAbsl(body), "]");
      }
      continue;
    }
    if (in_class) {
      if (c == ']' && i > class_start) in_class = false;
      out.push_back(c);
      continue;
    }
    if (c == '[') {
      in_class = true;
      class_start = i + 1;
      if (class_start < pattern.size() && pattern[class_start] == '^') ++class_start;
      out.push_back(c);
      continue;
    }
    if (c == '(' && pattern.substr(i, 3) == "(?=") {
      return absl::InvalidArgumentError(
          absl::StrCat("regex \"", ToAbsl(pattern), "\": lookahead is not supported"));
    }
    if (c == '(' && (pattern.substr(i, 3) == "(?!" || pattern.substr(i, 3) == "(?<" ||
                     pattern.substr(i, 3) == "(?>")) {
      // "(?<name>" is a named group in Oniguruma; RE2 wants "(?P<name>".
      if (pattern.substr(i, 3) == "(?<" && i + 3 < pattern.size() && pattern[i + 3] != '=' &&
          pattern[i + 3] != '!') {
        out.append("(?P<");
        i += 2;
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "regex \"", ToAbsl(pattern), "\": lookaround and atomic groups are not supported"));
    }
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<RE2>> Compile(std::string_view re2_pattern,
                                             std::string_view original) {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(64 << 20);
  auto re2 =
      std::make_unique<RE2>(re2::StringPiece(re2_pattern.data(), re2_pattern.size()), options);
  if (!re2->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex \"", ToAbsl(original), "\" is not supported: ", re2->error()));
  }
  return re2;
}

// Start of the last code point of non-empty valid UTF-8 `text`.
size_t LastCharStart(std::string_view text) {
  size_t pos = text.size() - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RegexPattern>> RegexPattern::FromOniguruma(
    std::string_view pattern) {
  if (pattern == kGpt2Pattern) {
    return std::unique_ptr<RegexPattern>(new RegexPattern(nullptr, /*is_gpt2=*/true));
  }
  absl::StatusOr<std::string> translated = TranslateToRe2(pattern);
  if (!translated.ok()) return translated.status();
  absl::StatusOr<std::unique_ptr<RE2>> re2 = Compile(*translated, pattern);
  if (!re2.ok()) return re2.status();
  return std::unique_ptr<RegexPattern>(new RegexPattern(std::move(*re2), /*is_gpt2=*/false));
}

absl::StatusOr<std::unique_ptr<RegexPattern>> RegexPattern::FromLiteral(std::string_view literal) {
  const std::string quoted = RE2::QuoteMeta(re2::StringPiece(literal.data(), literal.size()));
  absl::StatusOr<std::unique_ptr<RE2>> re2 = Compile(quoted, literal);
  if (!re2.ok()) return re2.status();
  return std::unique_ptr<RegexPattern>(new RegexPattern(std::move(*re2), /*is_gpt2=*/false));
}

const RegexPattern& RegexPattern::Gpt2() {
  static const RegexPattern* const pattern = new RegexPattern(nullptr, /*is_gpt2=*/true);
  return *pattern;
}

void RegexPattern::FindSpans(std::string_view text, std::vector<Span>& spans) const {
  if (text.empty()) {
    spans.push_back({0, 0, false});
    return;
  }
  if (is_gpt2_) {
    FindGpt2Spans(text, spans);
    return;
  }
  const re2::StringPiece input(text.data(), text.size());
  size_t search_pos = 0;
  size_t previous_end = 0;
  std::optional<size_t> last_match_end;
  re2::StringPiece match;
  while (search_pos <= text.size() &&
         re2_->Match(input, search_pos, text.size(), RE2::UNANCHORED, &match, 1)) {
    const size_t begin = static_cast<size_t>(match.data() - text.data());
    const size_t end = begin + match.size();
    // Like Oniguruma's iterator: an empty match right where the previous match ended is skipped
    // by stepping one character forward, which also guarantees progress.
    if (begin == end && last_match_end == end) {
      if (search_pos >= text.size()) break;
      search_pos += Utf8Length(static_cast<unsigned char>(text[search_pos]));
      continue;
    }
    if (previous_end != begin) spans.push_back({previous_end, begin, false});
    spans.push_back({begin, end, true});
    previous_end = end;
    search_pos = end;
    last_match_end = end;
  }
  if (previous_end != text.size()) spans.push_back({previous_end, text.size(), false});
}

void RegexPattern::FindGpt2Spans(std::string_view text, std::vector<Span>& spans) const {
  // The pattern without its lookahead alternative; `\s+(?!\S)|\s+` becomes `\s+` plus the
  // give-back rule below.
  static const RE2* const re2 = [] {
    RE2::Options options;
    options.set_log_errors(false);
    return new RE2(
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\t-\r\x{85}\p{Z}\p{L}\p{N}]+|[\t-\r\x{85}\p{Z}]+)",
        options);
  }();
  const re2::StringPiece input(text.data(), text.size());
  re2::StringPiece match;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end;
    if (re2->Match(input, pos, text.size(), RE2::ANCHOR_START, &match, 1) && !match.empty()) {
      end = pos + match.size();
    } else {
      end = pos + Utf8Length(static_cast<unsigned char>(text[pos]));  // unreachable for valid text
    }
    // Only the whitespace alternative ends in whitespace. `\s+(?!\S)` would have stopped one
    // character short of a following non-space, leaving that character to start the next piece
    // (e.g. "  a" splits as " " + " a"); a single whitespace character falls through to `\s+`.
    const size_t last = pos + LastCharStart(text.substr(pos, end - pos));
    if (end < text.size() && last > pos) {
      size_t cursor = last;
      if (IsWhitespace(DecodeUtf8(text, cursor))) end = last;
    }
    spans.push_back({pos, end, true});
    pos = end;
  }
}

}  // namespace mambaserve
