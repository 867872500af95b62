#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/json_util.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace mambaserve {
namespace {

// Records the parser's message (with its byte position) instead of throwing.
class ErrorRecorder : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::string message;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& error) override {
    message = error.what();
    return false;
  }
};

std::string DescribeJsonError(std::string_view text) {
  ErrorRecorder recorder;
  nlohmann::json::sax_parse(text, &recorder, nlohmann::json::input_format_t::json,
                            /*strict=*/true);
  return recorder.message.empty() ? "malformed JSON" : recorder.message;
}

absl::Status RejectIfSet(const nlohmann::json& root, std::string_view key) {
  ASSIGN_OR_RETURN(const nlohmann::json* field, GetOptionalMember(root, key, "(root)"));
  if (field != nullptr) {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: ", ToAbsl(key),
                                                 " is set but not supported (it must be null)"));
  }
  return absl::OkStatus();
}

absl::Status CheckDecoder(const nlohmann::json& root) {
  ASSIGN_OR_RETURN(const nlohmann::json* decoder, GetMember(root, "decoder", "(root)"));
  ASSIGN_OR_RETURN(const std::string type, GetString(*decoder, "type", "decoder"));
  if (type != "ByteLevel") {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer.json: unsupported decoder type \"", type, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", ToAbsl(path)));
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad())
    return absl::DataLossError(absl::StrCat("cannot read tokenizer file ", ToAbsl(path)));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = FromJson(contents.str());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(ToAbsl(path), ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text) {
  const nlohmann::json root =
      nlohmann::json::parse(json_text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json is not valid JSON: ", DescribeJsonError(json_text)));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: top level must be an object");
  }
  RETURN_IF_ERROR(RejectIfSet(root, "truncation"));
  RETURN_IF_ERROR(RejectIfSet(root, "padding"));
  RETURN_IF_ERROR(CheckDecoder(root));

  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
  ASSIGN_OR_RETURN(const nlohmann::json* normalizer_config,
                   GetOptionalMember(root, "normalizer", "(root)"));
  ASSIGN_OR_RETURN(Normalizer normalizer,
                   Normalizer::FromJson(normalizer_config ? *normalizer_config : nlohmann::json()));
  tokenizer->normalizer_ = std::make_unique<Normalizer>(std::move(normalizer));

  ASSIGN_OR_RETURN(const nlohmann::json* pre_config,
                   GetOptionalMember(root, "pre_tokenizer", "(root)"));
  ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_,
                   PreTokenizer::FromJson(pre_config ? *pre_config : nlohmann::json()));

  ASSIGN_OR_RETURN(const nlohmann::json* model_config, GetMember(root, "model", "(root)"));
  ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::FromJson(*model_config));

  ASSIGN_OR_RETURN(const nlohmann::json* added_config,
                   GetOptionalMember(root, "added_tokens", "(root)"));
  ASSIGN_OR_RETURN(AddedVocabulary added,
                   AddedVocabulary::FromJson(added_config ? *added_config : nlohmann::json(),
                                             *tokenizer->model_, *tokenizer->normalizer_));
  tokenizer->added_ = std::make_unique<AddedVocabulary>(std::move(added));

  absl::flat_hash_set<int32_t> ids;
  for (const auto& [id, token] : tokenizer->model_->id_to_token()) ids.insert(id);
  for (const AddedToken& token : tokenizer->added_->tokens()) ids.insert(token.id);
  tokenizer->vocab_size_ = static_cast<int32_t>(ids.size());
  return tokenizer;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text) const {
  RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  std::vector<AddedTokenSplit> raw_splits;
  std::vector<AddedTokenSplit> normalized_splits;
  std::vector<std::string> pieces;
  added_->SplitRaw(text, raw_splits);
  for (const AddedTokenSplit& raw : raw_splits) {
    if (raw.id.has_value()) {
      ids.push_back(*raw.id);
      continue;
    }
    ASSIGN_OR_RETURN(const std::string normalized, normalizer_->Normalize(raw.text));
    normalized_splits.clear();
    added_->SplitNormalized(normalized, normalized_splits);
    for (const AddedTokenSplit& split : normalized_splits) {
      if (split.id.has_value()) {
        ids.push_back(*split.id);
        continue;
      }
      pieces.clear();
      pieces.emplace_back(split.text);
      if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(pieces);
      for (const std::string& piece : pieces) model_->Tokenize(piece, ids);
    }
  }
  return ids;
}

const std::string* Tokenizer::FindToken(int32_t id) const {
  if (const AddedToken* added = added_->FindById(id)) return &added->content;
  return model_->IdToToken(id);
}

absl::Status Tokenizer::AppendTokenBytesOf(int32_t id, std::string& bytes) const {
  const std::string* token = FindToken(id);
  if (token == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown token id ", id));
  }
  AppendTokenBytes(*token, bytes);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    const absl::Status status = AppendTokenBytesOf(ids[i], bytes);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(status.message(), " at position ", i));
    }
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*hold_incomplete_tail=*/false, text);
  return text;
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  if (const std::optional<int32_t> id = added_->TokenToId(token)) return id;
  return model_->TokenToId(token);
}

std::optional<std::string> Tokenizer::TokenString(int32_t id) const {
  const std::string* token = FindToken(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

}  // namespace mambaserve
