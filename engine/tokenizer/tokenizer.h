// Text <-> token ids for byte-level BPE models described by a Hugging Face tokenizer.json,
// reproducing the reference `tokenizers` library byte for byte.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mambaserve {

class AddedVocabulary;
class BpeModel;
class Normalizer;
class PreTokenizer;

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text -> ids, no BOS/EOS added. Invalid UTF-8 -> InvalidArgumentError naming the byte offset.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;
  // Ids -> text through the ByteLevel decoder; an unknown id is an InvalidArgumentError. Bytes
  // that do not form valid UTF-8 become U+FFFD.
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const;

  // Number of distinct ids, added tokens included.
  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> TokenId(std::string_view token) const;
  std::optional<std::string> TokenString(int32_t id) const;

  // All const methods are safe to call concurrently.

 private:
  friend class IncrementalDetokenizer;

  Tokenizer();
  // The token's spelling (added token content or vocabulary entry); nullptr if unknown.
  const std::string* FindToken(int32_t id) const;
  // Appends the raw bytes of token `id`; InvalidArgumentError if the id is unknown.
  absl::Status AppendTokenBytesOf(int32_t id, std::string& bytes) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;  // null: the whole text is one word
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocabulary> added_;
  int32_t vocab_size_ = 0;
};

// Streaming detokenizer: one per generated stream. Not thread-safe; the tokenizer must outlive
// it.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Appends one id; returns the newly completed text (only whole UTF-8 characters; may be
  // empty). An unknown id is an InvalidArgumentError and leaves the state unchanged.
  absl::StatusOr<std::string> Push(int32_t id);
  // At end of stream: flushes held bytes (invalid trailing bytes become U+FFFD as Decode would).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;  // bytes of an unfinished character
};

}  // namespace mambaserve
