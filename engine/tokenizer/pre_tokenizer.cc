#include "engine/tokenizer/pre_tokenizer.h"

#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/json_util.h"
#include "engine/tokenizer/regex_pattern.h"
#include "engine/tokenizer/split_behavior.h"
#include "engine/tokenizer/unicode_props.h"
#include "engine/tokenizer/utf8.h"

namespace mambaserve {
namespace {

// Spans for a per-character predicate: every matching character is its own match.
void FindCharSpans(std::string_view text, bool (*predicate)(char32_t), std::vector<Span>& spans) {
  if (text.empty()) {
    spans.push_back({0, 0, false});
    return;
  }
  size_t last_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    if (predicate(DecodeUtf8(text, pos))) {
      if (last_offset < begin) spans.push_back({last_offset, begin, false});
      spans.push_back({begin, pos, true});
      last_offset = pos;
    }
  }
  if (last_offset < text.size()) spans.push_back({last_offset, text.size(), false});
}

// Runs `find_spans` on every piece and regroups according to `behavior`.
template <typename FindSpans>
void SplitPieces(std::vector<std::string>& pieces, SplitBehavior behavior,
                 const FindSpans& find_spans) {
  std::vector<std::string> result;
  result.reserve(pieces.size() * 2);
  std::vector<Span> spans;
  for (std::string& piece : pieces) {
    spans.clear();
    find_spans(piece, spans);
    // A piece that stays whole (the common case) is moved rather than copied.
    if (spans.size() == 1 && (behavior != SplitBehavior::kRemoved || !spans[0].is_match)) {
      if (!piece.empty()) result.push_back(std::move(piece));
      continue;
    }
    ApplySplitBehavior(piece, spans, behavior, result);
  }
  pieces = std::move(result);
}

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}

  void PreTokenize(std::vector<std::string>& pieces) const override {
    if (add_prefix_space_) {
      for (std::string& piece : pieces) {
        if (piece.empty() || piece[0] != ' ') piece.insert(0, 1, ' ');
      }
    }
    if (use_regex_) {
      const RegexPattern& pattern = RegexPattern::Gpt2();
      SplitPieces(
          pieces, SplitBehavior::kIsolated,
          [&](std::string_view text, std::vector<Span>& spans) { pattern.FindSpans(text, spans); });
    }
    std::string mapped;
    for (std::string& piece : pieces) {
      mapped.clear();
      AppendByteLevel(piece, mapped);
      piece.swap(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
};

class CharClassPreTokenizer final : public PreTokenizer {
 public:
  CharClassPreTokenizer(bool (*predicate)(char32_t), SplitBehavior behavior)
      : predicate_(predicate), behavior_(behavior) {}

  void PreTokenize(std::vector<std::string>& pieces) const override {
    SplitPieces(pieces, behavior_, [&](std::string_view text, std::vector<Span>& spans) {
      FindCharSpans(text, predicate_, spans);
    });
  }

 private:
  bool (*predicate_)(char32_t);
  SplitBehavior behavior_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<RegexPattern> pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void PreTokenize(std::vector<std::string>& pieces) const override {
    SplitPieces(pieces, behavior_, [&](std::string_view text, std::vector<Span>& spans) {
      pattern_->FindSpans(text, spans);
      if (invert_) {
        for (Span& span : spans) span.is_match = !span.is_match;
      }
    });
  }

 private:
  std::unique_ptr<RegexPattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}

  void PreTokenize(std::vector<std::string>& pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<SplitBehavior> BehaviorField(const nlohmann::json& config, std::string_view path,
                                            SplitBehavior default_value) {
  ASSIGN_OR_RETURN(const nlohmann::json* field, GetOptionalMember(config, "behavior", path));
  if (field == nullptr) return default_value;
  if (!field->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", ToAbsl(path), ".behavior must be a string"));
  }
  return ParseSplitBehavior(field->get_ref<const std::string&>(),
                            absl::StrCat(ToAbsl(path), ".behavior"));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> Parse(const nlohmann::json& config,
                                                    const std::string& path, int depth) {
  if (depth > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: pre-tokenizers nested too deeply at ", ToAbsl(path)));
  }
  ASSIGN_OR_RETURN(const std::string type, GetString(config, "type", path));
  if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(const bool add_prefix_space, GetBool(config, "add_prefix_space", path, true));
    ASSIGN_OR_RETURN(const bool use_regex, GetBool(config, "use_regex", path, true));
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, use_regex);
  }
  if (type == "Punctuation") {
    ASSIGN_OR_RETURN(const SplitBehavior behavior,
                     BehaviorField(config, path, SplitBehavior::kIsolated));
    return std::make_unique<CharClassPreTokenizer>(&IsPunctuation, behavior);
  }
  if (type == "Digits") {
    ASSIGN_OR_RETURN(const bool individual, GetBool(config, "individual_digits", path, false));
    return std::make_unique<CharClassPreTokenizer>(
        &IsNumeric, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
  }
  if (type == "Split") {
    ASSIGN_OR_RETURN(const nlohmann::json* pattern, GetMember(config, "pattern", path));
    const std::string pattern_path = absl::StrCat(ToAbsl(path), ".pattern");
    std::unique_ptr<RegexPattern> regex;
    if (pattern->is_object() && pattern->size() == 1 && pattern->contains("Regex") &&
        (*pattern)["Regex"].is_string()) {
      ASSIGN_OR_RETURN(
          regex, RegexPattern::FromOniguruma((*pattern)["Regex"].get_ref<const std::string&>()));
    } else if (pattern->is_object() && pattern->size() == 1 && pattern->contains("String") &&
               (*pattern)["String"].is_string()) {
      ASSIGN_OR_RETURN(
          regex, RegexPattern::FromLiteral((*pattern)["String"].get_ref<const std::string&>()));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: ", pattern_path,
                       " must be {\"Regex\": string} or {\"String\": string}"));
    }
    ASSIGN_OR_RETURN(const nlohmann::json* behavior_field, GetMember(config, "behavior", path));
    (void)behavior_field;
    ASSIGN_OR_RETURN(const SplitBehavior behavior,
                     BehaviorField(config, path, SplitBehavior::kIsolated));
    ASSIGN_OR_RETURN(const bool invert, GetBool(config, "invert", path, false));
    return std::make_unique<SplitPreTokenizer>(std::move(regex), behavior, invert);
  }
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const nlohmann::json* list, GetMember(config, "pretokenizers", path));
    if (!list->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: ", ToAbsl(path), ".pretokenizers must be an array"));
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      ASSIGN_OR_RETURN(
          auto step,
          Parse((*list)[i], absl::StrCat(ToAbsl(path), ".pretokenizers[", i, "]"), depth + 1));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported pre-tokenizer type \"",
                                               type, "\" at ", ToAbsl(path)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  return Parse(config, "pre_tokenizer", 0);
}

}  // namespace mambaserve
