// Byte-pair-encoding model from tokenizer.json ("model" field, type BPE): vocabulary, ranked
// merges, and the merge loop that turns one pre-tokenized word into ids.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/word_cache.h"
#include "nlohmann/json.hpp"

namespace mambaserve {

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& config);

  // Appends the ids of `word` (one pre-tokenized piece). Thread-safe.
  void Tokenize(std::string_view word, std::vector<int32_t>& ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullptr when `id` is not in the vocabulary.
  const std::string* IdToToken(int32_t id) const;
  const absl::flat_hash_map<int32_t, std::string>& id_to_token() const { return id_to_token_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  absl::Status LoadVocab(const nlohmann::json& vocab);
  absl::Status LoadMerges(const nlohmann::json& merges);
  void MergeWord(std::string_view word, std::vector<int32_t>& ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<int32_t, std::string> id_to_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  // Ids of single code points below U+0200 (covers the byte-level alphabet); -1 if absent.
  std::array<int32_t, 0x200> small_char_ids_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  mutable WordCache cache_;
};

}  // namespace mambaserve
