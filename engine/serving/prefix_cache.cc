#include "engine/serving/prefix_cache.h"

#include <algorithm>

namespace mambaserve {

PrefixCache::PrefixCache(int64_t budget_bytes, int64_t block_tokens)
    : budget_bytes_(std::max<int64_t>(budget_bytes, 0)),
      block_tokens_(std::max<int64_t>(block_tokens, 1)) {}

std::vector<uint64_t> PrefixCache::BlockHashes(std::span<const int32_t> prompt) const {
  // FNV-1a over the ids' bytes, recorded at every block boundary: one pass for all prefixes.
  std::vector<uint64_t> hashes;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < prompt.size(); ++i) {
    const uint32_t v = static_cast<uint32_t>(prompt[i]);
    for (int b = 0; b < 4; ++b) {
      h ^= (v >> (8 * b)) & 0xffu;
      h *= 0x100000001b3ULL;
    }
    if ((i + 1) % static_cast<size_t>(block_tokens_) == 0) hashes.push_back(h);
  }
  return hashes;
}

PrefixCache::Lru::iterator PrefixCache::Find(uint64_t hash, std::span<const int32_t> prefix) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return lru_.end();
  for (Lru::iterator entry : it->second) {
    if (std::equal(entry->tokens.begin(), entry->tokens.end(), prefix.begin(), prefix.end()))
      return entry;
  }
  return lru_.end();
}

PrefixCache::Hit PrefixCache::Longest(std::span<const int32_t> prompt) {
  Hit hit;
  if (!enabled() || static_cast<int64_t>(prompt.size()) < block_tokens_) return hit;
  const std::vector<uint64_t> hashes = BlockHashes(prompt);
  for (size_t blocks = hashes.size(); blocks > 0; --blocks) {
    const size_t tokens = blocks * static_cast<size_t>(block_tokens_);
    if (tokens >= prompt.size()) continue;  // at least one token must run
    Lru::iterator entry = Find(hashes[blocks - 1], prompt.first(tokens));
    if (entry == lru_.end()) continue;
    lru_.splice(lru_.end(), lru_, entry);  // most recently used now
    hit.tokens = static_cast<int64_t>(tokens);
    hit.state = entry->state;
    ++stats_.hits;
    stats_.saved_tokens += hit.tokens;
    return hit;
  }
  ++stats_.misses;
  return hit;
}

bool PrefixCache::Contains(std::span<const int32_t> prefix) const {
  if (!enabled() || prefix.empty() || prefix.size() % static_cast<size_t>(block_tokens_) != 0)
    return false;
  return Find(BlockHashes(prefix).back(), prefix) != lru_.end();
}

void PrefixCache::Insert(std::span<const int32_t> prefix,
                         std::shared_ptr<const std::vector<uint8_t>> state) {
  if (!enabled() || prefix.empty() || prefix.size() % static_cast<size_t>(block_tokens_) != 0 ||
      state == nullptr) {
    return;
  }
  const uint64_t hash = BlockHashes(prefix).back();
  if (Find(hash, prefix) != lru_.end()) return;  // already cached
  Entry entry{hash, {prefix.begin(), prefix.end()}, std::move(state)};
  if (entry.bytes() > budget_bytes_) return;
  while (stats_.bytes + entry.bytes() > budget_bytes_ && !lru_.empty()) {
    Lru::iterator oldest = lru_.begin();
    std::vector<Lru::iterator>& same = by_hash_[oldest->hash];
    std::erase(same, oldest);
    if (same.empty()) by_hash_.erase(oldest->hash);
    stats_.bytes -= oldest->bytes();
    --stats_.entries;
    ++stats_.evictions;
    lru_.erase(oldest);
  }
  stats_.bytes += entry.bytes();
  ++stats_.entries;
  ++stats_.insertions;
  by_hash_[hash].push_back(lru_.insert(lru_.end(), std::move(entry)));
}

}  // namespace mambaserve
