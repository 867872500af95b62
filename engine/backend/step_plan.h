// What every backend does with a Step before its own arithmetic: validate it, lay out the logits
// rows, and split it into passes of bounded size. Shared so the CPU and CUDA backends cannot drift.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/backend.h"

namespace mambaserve {

// One sequence's tokens inside a pass: rows [row_begin, row_begin + len) of the packed tokens.
struct PassChunk {
  int sequence;  // index into Step::sequences
  int slot;
  int64_t row_begin;
  int64_t len;
  bool start_fresh;   // the first chunk of a sequence that starts fresh
  bool emits_logits;  // the last chunk of a sequence that wants logits: its last row's argmax
  bool token_only;    // with emits_logits: the sequence needs only its argmax, not its row
  // The chunk's last `logits_rows` rows go to the caller, to StepOutput rows from `out_row` on: 1
  // for the last chunk of a sequence that wants logits, every row with all_logits, else 0.
  int64_t logits_rows;
  int64_t out_row;
};

// Slots in [0, num_slots) and distinct (OutOfRange / InvalidArgument), at least one token per
// sequence, every token id in [0, vocab_size), all_logits only with want_logits and not token_only.
absl::Status ValidateStep(const Step& step, int num_slots, int64_t vocab_size);

// Gives each sequence with want_logits the next logits row (the next one per token with
// all_logits) and sizes out->logits to [rows][vocab_size], and out->argmax to one -1 per sequence;
// the backend then writes every row (token_only rows it may skip) and the argmax of each sequence.
void PrepareStepOutput(const Step& step, int64_t vocab_size, StepOutput* out);

// Packs the step's tokens into passes of at most max_rows rows, in order: a long prompt spans
// several passes and its state carries through its slot, so activation memory is constant in
// prompt length. For each pass, copies its tokens to tokens[0, rows) and calls
// run_pass(chunks, rows); stops at the first error. Chunks keep the step's sequence order, so the
// logits rows (PrepareStepOutput) of one pass's chunks are consecutive.
absl::Status ForEachPass(
    const Step& step, int64_t max_rows, int32_t* tokens,
    const std::function<absl::Status(const std::vector<PassChunk>&, int64_t)>& run_pass);

}  // namespace mambaserve
