#include "engine/tokenizer/word_cache.h"

#include "absl/hash/hash.h"

namespace mambaserve {

WordCache::Shard& WordCache::ShardFor(std::string_view word) const {
  return shards_[absl::HashOf(absl::string_view(word.data(), word.size())) % kShards];
}

bool WordCache::Lookup(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.size() > kMaxWordBytes) return false;
  Shard& shard = ShardFor(word);
  absl::MutexLock lock(&shard.mutex);
  const auto it = shard.entries.find(absl::string_view(word.data(), word.size()));
  if (it == shard.entries.end()) return false;
  ids.insert(ids.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::Insert(std::string_view word, const int32_t* ids, size_t count) {
  if (word.size() > kMaxWordBytes) return;
  Shard& shard = ShardFor(word);
  absl::MutexLock lock(&shard.mutex);
  if (shard.entries.size() >= kMaxEntriesPerShard) shard.entries.clear();
  shard.entries.try_emplace(std::string(word), ids, ids + count);
}

}  // namespace mambaserve
