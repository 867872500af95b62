#include "engine/tokenizer/bpe_model.h"

#include <limits>
#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/json_util.h"
#include "engine/tokenizer/utf8.h"

namespace mambaserve {
namespace {

constexpr std::string_view kPath = "model";

// Options of the reference BPE model that change tokenization and are not implemented here:
// a file that sets them is rejected rather than silently tokenized differently.
absl::Status RejectUnsupported(const nlohmann::json& config) {
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    ASSIGN_OR_RETURN(const nlohmann::json* field, GetOptionalMember(config, key, kPath));
    if (field != nullptr && !(field->is_string() && field->get_ref<const std::string&>().empty())) {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: model.", ToAbsl(key), " is not supported"));
    }
  }
  ASSIGN_OR_RETURN(const nlohmann::json* dropout, GetOptionalMember(config, "dropout", kPath));
  if (dropout != nullptr && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return absl::UnimplementedError("tokenizer.json: model.dropout is not supported");
  }
  ASSIGN_OR_RETURN(const bool byte_fallback, GetBool(config, "byte_fallback", kPath, false));
  if (byte_fallback) {
    return absl::UnimplementedError("tokenizer.json: model.byte_fallback=true is not supported");
  }
  return absl::OkStatus();
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  int32_t length;  // 0 once merged into its left neighbour
};

struct QueuedMerge {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
};

// Lowest rank first, then leftmost position: the order of the reference implementation's heap.
struct MergeOrder {
  bool operator()(const QueuedMerge& a, const QueuedMerge& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& config) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model must be an object");
  }
  ASSIGN_OR_RETURN(const nlohmann::json* type, GetOptionalMember(config, "type", kPath));
  if (type != nullptr) {
    if (!type->is_string()) {
      return absl::InvalidArgumentError("tokenizer.json: model.type must be a string");
    }
    if (type->get_ref<const std::string&>() != "BPE") {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported model type \"",
                                                   type->get_ref<const std::string&>(), "\""));
    }
  }
  RETURN_IF_ERROR(RejectUnsupported(config));
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  ASSIGN_OR_RETURN(const nlohmann::json* vocab, GetMember(config, "vocab", kPath));
  RETURN_IF_ERROR(model->LoadVocab(*vocab));
  ASSIGN_OR_RETURN(const nlohmann::json* merges, GetMember(config, "merges", kPath));
  RETURN_IF_ERROR(model->LoadMerges(*merges));
  ASSIGN_OR_RETURN(const nlohmann::json* unk, GetOptionalMember(config, "unk_token", kPath));
  if (unk != nullptr) {
    if (!unk->is_string()) {
      return absl::InvalidArgumentError("tokenizer.json: model.unk_token must be a string");
    }
    const std::optional<int32_t> unk_id = model->TokenToId(unk->get_ref<const std::string&>());
    if (!unk_id.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.unk_token \"",
                                                     unk->get_ref<const std::string&>(),
                                                     "\" is not in the vocabulary"));
    }
    model->unk_id_ = unk_id;
  }
  ASSIGN_OR_RETURN(model->fuse_unk_, GetBool(config, "fuse_unk", kPath, false));
  ASSIGN_OR_RETURN(model->ignore_merges_, GetBool(config, "ignore_merges", kPath, false));
  return model;
}

absl::Status BpeModel::LoadVocab(const nlohmann::json& vocab) {
  if (!vocab.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab must be an object");
  }
  small_char_ids_.fill(-1);
  vocab_.reserve(vocab.size());
  id_to_token_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.vocab[\"", token,
                                                     "\"] must be a non-negative 32-bit integer"));
    }
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    vocab_[token] = id;
    id_to_token_[id] = token;
    if (!token.empty()) {
      size_t pos = 0;
      const char32_t cp = DecodeUtf8(token, pos);
      if (pos == token.size() && cp < small_char_ids_.size()) small_char_ids_[cp] = id;
    }
  }
  return absl::OkStatus();
}

absl::Status BpeModel::LoadMerges(const nlohmann::json& merges) {
  if (!merges.is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: model.merges must be an array");
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const nlohmann::json& entry = merges[rank];
    std::string left, right;
    if (entry.is_string()) {
      // Legacy form "left right": the two parts must be separated by exactly one space.
      const std::string& text = entry.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.merges[", rank,
                                                       "] = \"", text, "\" is not \"left right\""));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.merges[", rank,
                                                     "] must be a string or a pair of strings"));
    }
    const auto left_it = vocab_.find(left);
    const auto right_it = vocab_.find(right);
    const auto merged_it = vocab_.find(left + right);
    if (left_it == vocab_.end() || right_it == vocab_.end() || merged_it == vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.merges[", rank,
                                                     "] uses a token missing from the vocabulary"));
    }
    // A repeated pair keeps its last rank, as in the reference implementation.
    merges_[PairKey(left_it->second, right_it->second)] =
        Merge{static_cast<int32_t>(rank), merged_it->second};
  }
  return absl::OkStatus();
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  const auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  const auto it = id_to_token_.find(id);
  return it == id_to_token_.end() ? nullptr : &it->second;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(absl::string_view(word.data(), word.size()));
        it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (cache_.Lookup(word, ids)) return;
  const size_t first = ids.size();
  MergeWord(word, ids);
  cache_.Insert(word, ids.data() + first, ids.size() - first);
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>& ids) const {
  // Scratch buffer reused across calls on the same thread.
  thread_local std::vector<Symbol> symbols;
  symbols.clear();

  auto add_symbol = [&](int32_t id, int32_t length) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, length});
  };
  // Characters missing from the vocabulary become the unknown token (fused into one if
  // configured) or, without an unknown token, are dropped — both as the reference does.
  int32_t pending_unk_length = 0;  // bytes of unknown characters not yet emitted; 0: none
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    const char32_t cp = DecodeUtf8(word, pos);
    int32_t id = cp < small_char_ids_.size() ? small_char_ids_[cp] : -1;
    if (id < 0 && cp >= small_char_ids_.size()) {
      if (const auto it = vocab_.find(absl::string_view(word.data() + start, pos - start));
          it != vocab_.end()) {
        id = it->second;
      }
    }
    const auto length = static_cast<int32_t>(pos - start);
    if (id >= 0) {
      if (pending_unk_length > 0) add_symbol(*unk_id_, pending_unk_length);
      pending_unk_length = 0;
      add_symbol(id, length);
    } else if (unk_id_.has_value()) {
      if (pending_unk_length > 0 && fuse_unk_) {
        pending_unk_length += length;
      } else {
        if (pending_unk_length > 0) add_symbol(*unk_id_, pending_unk_length);
        pending_unk_length = length;
      }
    }
  }
  if (pending_unk_length > 0) add_symbol(*unk_id_, pending_unk_length);

  std::priority_queue<QueuedMerge, std::vector<QueuedMerge>, MergeOrder> queue;
  auto find_merge = [&](int32_t left, int32_t right) -> const Merge* {
    const auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  const auto count = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i + 1 < count; ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, i, m->new_id});
    }
  }
  while (!queue.empty()) {
    const QueuedMerge top = queue.top();
    queue.pop();
    Symbol& current = symbols[top.pos];
    if (current.length == 0 || current.next == -1) continue;
    const int32_t next_pos = current.next;
    const Symbol right = symbols[next_pos];
    // Skip entries made stale by an earlier merge.
    const Merge* m = find_merge(current.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    current.id = top.new_id;
    current.length += right.length;
    current.next = right.next;
    symbols[next_pos].length = 0;
    if (right.next >= 0 && right.next < count) symbols[right.next].prev = top.pos;
    if (current.prev >= 0) {
      if (const Merge* left_merge = find_merge(symbols[current.prev].id, current.id)) {
        queue.push({left_merge->rank, current.prev, left_merge->new_id});
      }
    }
    if (current.next >= 0 && current.next < count) {
      if (const Merge* right_merge = find_merge(current.id, symbols[current.next].id)) {
        queue.push({right_merge->rank, top.pos, right_merge->new_id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.length != 0) ids.push_back(s.id);
  }
}

}  // namespace mambaserve
