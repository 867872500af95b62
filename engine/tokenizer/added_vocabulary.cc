#include "engine/tokenizer/added_vocabulary.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/json_util.h"
#include "engine/tokenizer/unicode_props.h"
#include "engine/tokenizer/utf8.h"

namespace mambaserve {
namespace {

char32_t LastChar(std::string_view text) {
  size_t pos = text.size() - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  return DecodeUtf8(text, pos);
}

char32_t FirstChar(std::string_view text) {
  size_t pos = 0;
  return DecodeUtf8(text, pos);
}

// Start of the whitespace run that ends `text` (text.size() if none).
size_t TrailingSpaceStart(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t cursor = start;
    if (!IsWhitespace(DecodeUtf8(text, cursor))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts `text`.
size_t LeadingSpaceLength(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!IsWhitespace(DecodeUtf8(text, next))) break;
    pos = next;
  }
  return pos;
}

absl::StatusOr<AddedToken> ParseToken(const nlohmann::json& entry, const std::string& path) {
  AddedToken token;
  ASSIGN_OR_RETURN(token.content, GetString(entry, "content", path));
  ASSIGN_OR_RETURN(const nlohmann::json* id, GetMember(entry, "id", path));
  if (!id->is_number_integer() || id->get<int64_t>() < 0 ||
      id->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", ToAbsl(path),
                                                   ".id must be a non-negative 32-bit integer"));
  }
  token.id = static_cast<int32_t>(id->get<int64_t>());
  ASSIGN_OR_RETURN(token.special, GetBool(entry, "special", path, false));
  // The reference default: special tokens are not normalized, others are.
  ASSIGN_OR_RETURN(token.normalized, GetBool(entry, "normalized", path, !token.special));
  ASSIGN_OR_RETURN(token.lstrip, GetBool(entry, "lstrip", path, false));
  ASSIGN_OR_RETURN(token.rstrip, GetBool(entry, "rstrip", path, false));
  ASSIGN_OR_RETURN(token.single_word, GetBool(entry, "single_word", path, false));
  return token;
}

}  // namespace

void AddedVocabulary::Trie::Insert(std::string_view key, int32_t token_index) {
  int32_t node = 0;
  for (const char c : key) {
    const auto byte = static_cast<unsigned char>(c);
    auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, unsigned char b) { return child.first < b; });
    if (it != children.end() && it->first == byte) {
      node = it->second;
      continue;
    }
    const auto child = static_cast<int32_t>(nodes.size());
    children.insert(it, {byte, child});
    nodes.emplace_back();
    node = child;
  }
  if (!key.empty()) first_byte[static_cast<unsigned char>(key[0])] = true;
  if (nodes[node].terminal < 0) nodes[node].terminal = token_index;
}

std::pair<int32_t, size_t> AddedVocabulary::Trie::LongestMatch(std::string_view text,
                                                               size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, unsigned char b) { return child.first < b; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes[node].terminal >= 0) best = {nodes[node].terminal, i + 1 - pos};
  }
  return best;
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const nlohmann::json& config,
                                                          const BpeModel& model,
                                                          const Normalizer& normalizer) {
  AddedVocabulary vocab;
  if (config.is_null()) return vocab;
  if (!config.is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: added_tokens must be an array");
  }
  // Ids are assigned the way the reference does when it loads the file (the "id" fields are
  // only checked there): a spelling already in the model vocabulary keeps the model's id, a
  // repeated spelling keeps its first id, and a new one gets the next id after the highest
  // added id, or the model vocabulary size when that is larger.
  const auto model_size = static_cast<int64_t>(model.id_to_token().size());
  std::optional<int64_t> max_added_id;
  for (size_t i = 0; i < config.size(); ++i) {
    ASSIGN_OR_RETURN(AddedToken token,
                     ParseToken(config[i], absl::StrCat("added_tokens[", i, "]")));
    if (token.content.empty()) continue;  // ignored by the reference as well
    const auto existing = vocab.by_content_.find(token.content);
    int64_t id;
    if (existing != vocab.by_content_.end()) {
      id = vocab.tokens_[existing->second].id;
    } else if (const std::optional<int32_t> model_id = model.TokenToId(token.content)) {
      id = *model_id;
    } else if (!max_added_id.has_value()) {
      id = model_size;
    } else {
      id = (*max_added_id >= model_size || model_size == 0) ? *max_added_id + 1 : model_size;
    }
    if (id > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError("tokenizer.json: too many added tokens");
    }
    token.id = static_cast<int32_t>(id);
    max_added_id = std::max(max_added_id.value_or(id), id);
    if (existing != vocab.by_content_.end()) {
      vocab.tokens_[existing->second] = token;  // the last definition wins
      continue;
    }
    vocab.by_content_[token.content] = vocab.tokens_.size();
    vocab.tokens_.push_back(std::move(token));
  }
  // Special tokens are registered before the others, as in the reference.
  std::vector<size_t> order(vocab.tokens_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(),
                        [&](size_t i) { return vocab.tokens_[i].special; });
  for (const size_t index : order) {
    const AddedToken& token = vocab.tokens_[index];
    vocab.by_id_.try_emplace(token.id, index);
    if (!token.normalized) {
      vocab.raw_trie_.Insert(token.content, static_cast<int32_t>(index));
      continue;
    }
    ASSIGN_OR_RETURN(const std::string pattern, normalizer.Normalize(token.content));
    if (!pattern.empty()) vocab.normalized_trie_.Insert(pattern, static_cast<int32_t>(index));
  }
  return vocab;
}

std::optional<int32_t> AddedVocabulary::TokenToId(std::string_view content) const {
  const auto it = by_content_.find(absl::string_view(content.data(), content.size()));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

void AddedVocabulary::FindMatches(std::string_view text, const Trie& trie,
                                  std::vector<AddedTokenSplit>& out) const {
  if (text.empty()) return;
  if (trie.empty()) {
    out.push_back({text, std::nullopt});
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [index, length] = trie.LongestMatch(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + length;
    // The scan resumes after the raw match even when the token is discarded or extended.
    pos = stop;
    const AddedToken& token = tokens_[index];
    if (token.single_word) {
      const bool space_before = start == 0 || !IsWordCharacter(LastChar(text.substr(0, start)));
      const bool space_after =
          stop == text.size() || !IsWordCharacter(FirstChar(text.substr(stop)));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) {
      // Whitespace already consumed by the previous match is not taken again.
      start = std::max(TrailingSpaceStart(text.substr(0, start)), start_offset);
    }
    if (token.rstrip) stop += LeadingSpaceLength(text.substr(stop));
    // After an rstrip that swallowed the start of this match, keep the split well-formed.
    start = std::min(start, stop);
    if (start_offset < start) out.push_back({text.substr(start_offset, start - start_offset), {}});
    out.push_back({text.substr(start, stop - start), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({text.substr(start_offset), std::nullopt});
}

}  // namespace mambaserve
