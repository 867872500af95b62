// Summary statistics the benchmarks report.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace mambaserve {

// The q-quantile of a non-empty sample, nearest rank (q = 0.5: the median).
inline double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

}  // namespace mambaserve
