// Added tokens (tokenizer.json "added_tokens"): strings such as "<|endoftext|>" that are cut out
// of the text before normalization and pre-tokenization, exactly as the reference
// AddedVocabulary does: leftmost-longest matching, with the lstrip/rstrip/single_word options.
// Tokens with normalized=false match the raw text; the others match the normalized text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/normalizer.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

class BpeModel;

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool normalized = true;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// A piece of text, and the added token it stands for (nullopt: ordinary text).
struct AddedTokenSplit {
  std::string_view text;
  std::optional<int32_t> id;
};

class AddedVocabulary {
 public:
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& config,
                                                  const BpeModel& model,
                                                  const Normalizer& normalizer);

  // Splits `text` on tokens with normalized=false (raw text).
  void SplitRaw(std::string_view text, std::vector<AddedTokenSplit>& out) const {
    FindMatches(text, raw_trie_, out);
  }
  // Splits already-normalized `text` on tokens with normalized=true.
  void SplitNormalized(std::string_view text, std::vector<AddedTokenSplit>& out) const {
    FindMatches(text, normalized_trie_, out);
  }

  std::optional<int32_t> TokenToId(std::string_view content) const;
  const AddedToken* FindById(int32_t id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Byte trie over token spellings; `terminal` is an index into tokens_ or -1.
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
      int32_t terminal = -1;
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};

    void Insert(std::string_view key, int32_t token_index);
    // Longest key starting at text[pos]: returns (token index, length) or (-1, 0).
    std::pair<int32_t, size_t> LongestMatch(std::string_view text, size_t pos) const;
    bool empty() const { return nodes.size() == 1; }
  };

  void FindMatches(std::string_view text, const Trie& trie,
                   std::vector<AddedTokenSplit>& out) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace mambaserve
