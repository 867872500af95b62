// States at block-aligned prompt prefixes, for requests without a session. An SSM cannot reuse
// part of a prefix, but the state after exactly the first k*block tokens of a prompt is all a later
// prompt starting with those tokens needs: it prefills only the rest. A system prompt shared by
// many users is then read once.
//
// Entries are keyed by a hash of the prefix's token ids and hold the ids themselves, so a lookup
// is exact (no hash collision can serve the wrong state). Least recently used entries are evicted
// beyond the byte budget. Not thread-safe: the scheduler thread owns it.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace mambaserve {

struct PrefixCacheStats {
  int64_t hits = 0;          // lookups that found a cached prefix
  int64_t misses = 0;        // lookups of prompts a block or longer that found none
  int64_t saved_tokens = 0;  // prompt tokens not prefilled thanks to hits
  int64_t insertions = 0;
  int64_t evictions = 0;
  int64_t entries = 0;
  int64_t bytes = 0;  // states and token ids held
};

class PrefixCache {
 public:
  // budget_bytes 0: disabled (every call is a no-op).
  PrefixCache(int64_t budget_bytes, int64_t block_tokens);

  bool enabled() const { return budget_bytes_ > 0; }
  int64_t block_tokens() const { return block_tokens_; }

  struct Hit {
    int64_t tokens = 0;  // 0: a miss
    std::shared_ptr<const std::vector<uint8_t>> state;
  };
  // The longest cached prefix of `prompt` that leaves at least one token to run (the request
  // needs that token's logits). Counts a hit or, for prompts a block or longer, a miss.
  Hit Longest(std::span<const int32_t> prompt);

  // Whether the state after `prefix` (a whole number of blocks) is cached.
  bool Contains(std::span<const int32_t> prefix) const;
  // Caches the state after `prefix` (a whole number of blocks), evicting the least recently used
  // entries to stay within the budget. A state larger than the budget is not kept.
  void Insert(std::span<const int32_t> prefix, std::shared_ptr<const std::vector<uint8_t>> state);

  const PrefixCacheStats& stats() const { return stats_; }

 private:
  struct Entry {
    uint64_t hash;
    std::vector<int32_t> tokens;
    std::shared_ptr<const std::vector<uint8_t>> state;
    int64_t bytes() const { return static_cast<int64_t>(tokens.size() * 4 + state->size()); }
  };
  using Lru = std::list<Entry>;  // least recently used first

  // Hashes of prompt[0, (i + 1) * block) for every whole block i.
  std::vector<uint64_t> BlockHashes(std::span<const int32_t> prompt) const;
  Lru::iterator Find(uint64_t hash, std::span<const int32_t> prefix) const;

  const int64_t budget_bytes_;
  const int64_t block_tokens_;
  mutable Lru lru_;
  absl::flat_hash_map<uint64_t, std::vector<Lru::iterator>> by_hash_;
  PrefixCacheStats stats_;
};

}  // namespace mambaserve
