#include "engine/serving/prefill_budget.h"

#include <algorithm>
#include <numeric>

namespace mambaserve {

std::vector<int64_t> FairPrefillShares(const std::vector<int64_t>& needs, int64_t budget,
                                       size_t rotation) {
  const size_t n = needs.size();
  std::vector<int64_t> shares(n, 0);
  if (n == 0 || budget <= 0) return shares;
  // Water-filling: visit the smallest needs first; each takes min(need, equal share of what is
  // left).
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return needs[a] < needs[b]; });
  int64_t left = budget;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = order[k];
    const int64_t equal = left / static_cast<int64_t>(n - k);
    shares[i] = std::clamp<int64_t>(needs[i], 0, equal);
    left -= shares[i];
  }
  // Rounding leaves fewer tokens than sequences: one each, in rotation.
  for (size_t k = 0; k < n && left > 0; ++k) {
    const size_t i = (rotation + k) % n;
    if (shares[i] < needs[i]) {
      ++shares[i];
      --left;
    }
  }
  return shares;
}

}  // namespace mambaserve
