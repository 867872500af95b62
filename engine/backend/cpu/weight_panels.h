// The layout every CPU weight matrix [rows][cols] is stored in: panels of 64 output rows, each
// panel k-major, so that for a given input column the panel's 64 weights are one contiguous run
// (f32: one 256-byte run per column; bf16: one run per pair of columns, the two interleaved).
//
// Why: a product with several tokens then multiplies whole vectors of 16 output rows by one
// broadcast activation, with no horizontal sums, and the batch-1 product still reads each panel
// as one sequential stream. It is exactly oneDNN's blocked weights format for a [cols][rows]
// matrix (BA16a64b for f32, BA16a64b2a for bf16: what its matmul picks for itself on AVX-512), so
// oneDNN reads the same memory without reordering the weights on every call — which at 32 decode
// streams cost it a quarter of its time.
//
// Columns are padded with zeros to the format's block (16, or 32 for bf16), rows to a whole panel.
#pragma once

#include <cstdint>

#include "engine/model/dtype.h"

namespace mambaserve::cpu {

struct WeightPanels {
  static constexpr int64_t kPanelRows = 64;

  int64_t rows = 0;
  int64_t cols = 0;
  DType dtype = DType::kF32;  // kF32 or kBF16

  int64_t padded_cols() const {
    const int64_t block = dtype == DType::kBF16 ? 32 : 16;
    return (cols + block - 1) / block * block;
  }
  int64_t panels() const { return (rows + kPanelRows - 1) / kPanelRows; }
  int64_t panel_elements() const { return padded_cols() * kPanelRows; }
  int64_t elements() const { return panels() * panel_elements(); }
  // Rows of panel p that hold real weights (the last panel's tail is padding).
  int64_t RowsInPanel(int64_t p) const {
    return rows - p * kPanelRows < kPanelRows ? rows - p * kPanelRows : kPanelRows;
  }

  // Where weight (r, k) lives, in elements from the start of the storage.
  int64_t Offset(int64_t r, int64_t k) const {
    const int64_t panel = r / kPanelRows * panel_elements();
    const int64_t lane = r % kPanelRows;
    if (dtype == DType::kBF16) return panel + (k / 2) * 2 * kPanelRows + lane * 2 + k % 2;
    return panel + k * kPanelRows + lane;
  }
};

}  // namespace mambaserve::cpu
