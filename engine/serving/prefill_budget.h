// How a step's prefill budget is shared among the sequences still reading their prompts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mambaserve {

// Max-min fair shares of `budget` tokens for sequences that still need `needs[i]` tokens: every
// sequence gets the same share unless it needs less, and what a short one leaves goes to the
// others. So a short prompt finishes within a step or two however many long prompts are prefilling
// beside it, and long prompts still use the whole budget between them. Tokens left by rounding go
// one at a time to the sequences in order from `rotation` (mod n), which the caller advances every
// step so that, when there are more sequences than tokens, each gets its turn. Shares never exceed
// needs and add up to min(budget, sum of needs).
std::vector<int64_t> FairPrefillShares(const std::vector<int64_t>& needs, int64_t budget,
                                       size_t rotation);

}  // namespace mambaserve
