// A small, real Hugging Face byte-level BPE tokenizer.json for the random test/default models:
// id 0 "<|endoftext|>" (special), ids 1..256 the 256 ByteLevel byte symbols, then merges learned
// deterministically from an embedded public-domain English sample. GPT-2 pre-tokenizer regex and
// ByteLevel decoder, so any byte string round-trips.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace mambaserve {

inline constexpr int kMaxTrainedVocab = 4096;

// The tokenizer.json text for a vocabulary of `vocab_size` ids (258..kMaxTrainedVocab). Same size,
// same bytes. Training stops early if the sample runs out of pairs to merge.
absl::StatusOr<std::string> TrainByteLevelBpeJson(int vocab_size);

// The English sample the merges are learned from.
const std::string& BpeTrainingText();

}  // namespace mambaserve
