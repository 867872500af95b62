// Fixed-size per-sequence state slots in host memory: conv state [layers][E][K-1] and SSM state
// [layers][E][N], both fp32. All memory is allocated up front: it never grows with tokens.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/model_config.h"

namespace mambaserve {

class HostStatePool {
 public:
  HostStatePool(const ModelConfig& config, int num_slots);

  int num_slots() const { return num_slots_; }
  int64_t slot_floats() const { return conv_floats_ + ssm_floats_; }
  int64_t bytes() const { return static_cast<int64_t>(data_.size() * sizeof(float)); }

  float* conv(int slot, int64_t layer) {  // [E][K-1]
    return data_.data() + slot * slot_floats() + layer * conv_per_layer_;
  }
  float* ssm(int slot, int64_t layer) {  // [E][N]
    return data_.data() + slot * slot_floats() + conv_floats_ + layer * ssm_per_layer_;
  }

  absl::Status CheckSlot(int slot) const;
  void Reset(int slot);
  // The portable layout is exactly the slot's memory: conv part, then SSM part.
  absl::Status Read(int slot, std::span<uint8_t> out) const;
  absl::Status Write(int slot, std::span<const uint8_t> in);

 private:
  int num_slots_;
  int64_t conv_per_layer_, ssm_per_layer_, conv_floats_, ssm_floats_;
  std::vector<float> data_;  // [slots][conv floats + ssm floats]
};

}  // namespace mambaserve
