// Thread-safe cache from a pre-tokenized word to its BPE ids. Natural text repeats words
// constantly, so most merge loops are skipped. Sharded to keep lock contention low when many
// threads encode at once; a full shard is simply cleared (bounded memory, no LRU bookkeeping).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace mambaserve {

class WordCache {
 public:
  // Words longer than this are not cached (they are rare and would bloat memory).
  static constexpr size_t kMaxWordBytes = 64;

  // Appends the cached ids of `word` to `ids` and returns true on a hit.
  bool Lookup(std::string_view word, std::vector<int32_t>& ids) const;
  void Insert(std::string_view word, const int32_t* ids, size_t count);

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 8192;

  struct Shard {
    mutable absl::Mutex mutex;
    absl::flat_hash_map<std::string, std::vector<int32_t>> entries ABSL_GUARDED_BY(mutex);
  };
  Shard& ShardFor(std::string_view word) const;

  mutable std::array<Shard, kShards> shards_;
};

}  // namespace mambaserve
