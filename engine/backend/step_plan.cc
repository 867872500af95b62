#include "engine/backend/step_plan.h"

#include <algorithm>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

int64_t LogitsRows(const SequenceInput& s) {
  if (!s.want_logits) return 0;
  return s.all_logits ? static_cast<int64_t>(s.tokens.size()) : 1;
}

}  // namespace

absl::Status ValidateStep(const Step& step, int num_slots, int64_t vocab_size) {
  std::unordered_set<int> slots;
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    const SequenceInput& s = step.sequences[i];
    if (s.slot < 0 || s.slot >= num_slots) {
      return absl::OutOfRangeError(
          absl::StrCat("state slot ", s.slot, " out of range [0, ", num_slots, ")"));
    }
    if (!slots.insert(s.slot).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", s.slot, " appears twice in one step"));
    }
    if (s.tokens.empty())
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has no tokens"));
    if (s.all_logits && (!s.want_logits || s.token_only)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", i, " asks for all_logits without want_logits or with token_only"));
    }
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " out of range [0, ", vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

void PrepareStepOutput(const Step& step, int64_t vocab_size, StepOutput* out) {
  out->vocab_size = vocab_size;
  out->row_of_sequence.assign(step.sequences.size(), -1);
  out->rows_of_sequence.assign(step.sequences.size(), 0);
  out->argmax.assign(step.sequences.size(), -1);
  int64_t rows = 0;
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    const int64_t n = LogitsRows(step.sequences[i]);
    if (n == 0) continue;
    out->row_of_sequence[i] = static_cast<int>(rows);
    out->rows_of_sequence[i] = static_cast<int>(n);
    rows += n;
  }
  // Resize, not assign: every row is overwritten, and re-zeroing a reused buffer at batch 256 x
  // 65k vocab would be 66 MB of writes per step.
  out->logits.resize(static_cast<size_t>(rows) * vocab_size);
}

absl::Status ForEachPass(
    const Step& step, int64_t max_rows, int32_t* tokens,
    const std::function<absl::Status(const std::vector<PassChunk>&, int64_t)>& run_pass) {
  std::vector<PassChunk> chunks;
  int64_t rows = 0;
  int64_t next_out_row = 0;  // as PrepareStepOutput numbers them
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    const SequenceInput& s = step.sequences[i];
    const int64_t total = static_cast<int64_t>(s.tokens.size());
    const int64_t first_out_row = next_out_row;
    next_out_row += LogitsRows(s);
    for (int64_t done = 0; done < total;) {
      if (rows == max_rows) {
        RETURN_IF_ERROR(run_pass(chunks, rows));
        chunks.clear();
        rows = 0;
      }
      const int64_t len = std::min<int64_t>(total - done, max_rows - rows);
      std::copy_n(s.tokens.data() + done, len, tokens + rows);
      const bool last = done + len == total;
      PassChunk chunk{
          static_cast<int>(i),   s.slot,       rows, len,          s.start_fresh && done == 0,
          s.want_logits && last, s.token_only, 0,    first_out_row};
      if (s.want_logits && s.all_logits) {
        chunk.logits_rows = len;
        chunk.out_row = first_out_row + done;
      } else if (s.want_logits && last) {
        chunk.logits_rows = 1;
      }
      chunks.push_back(chunk);
      rows += len;
      done += len;
    }
  }
  if (rows > 0) RETURN_IF_ERROR(run_pass(chunks, rows));
  return absl::OkStatus();
}

}  // namespace mambaserve
