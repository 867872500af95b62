#include "engine/backend/cpu/state_pool.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace mambaserve {

HostStatePool::HostStatePool(const ModelConfig& c, int num_slots)
    : num_slots_(num_slots),
      conv_per_layer_(c.d_inner * (c.d_conv - 1)),
      ssm_per_layer_(c.d_inner * c.d_state),
      conv_floats_(c.conv_state_floats()),
      ssm_floats_(c.ssm_state_floats()),
      data_(static_cast<size_t>(num_slots) * (c.conv_state_floats() + c.ssm_state_floats()), 0.0f) {
}

absl::Status HostStatePool::CheckSlot(int slot) const {
  if (slot < 0 || slot >= num_slots_) {
    return absl::OutOfRangeError(
        absl::StrCat("state slot ", slot, " out of range [0, ", num_slots_, ")"));
  }
  return absl::OkStatus();
}

void HostStatePool::Reset(int slot) {
  std::fill_n(data_.data() + slot * slot_floats(), slot_floats(), 0.0f);
}

absl::Status HostStatePool::Read(int slot, std::span<uint8_t> out) const {
  if (auto s = CheckSlot(slot); !s.ok()) return s;
  const size_t bytes = static_cast<size_t>(slot_floats()) * sizeof(float);
  if (out.size() != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("state buffer is ", out.size(), " bytes, slot holds ", bytes));
  }
  std::memcpy(out.data(), data_.data() + slot * slot_floats(), bytes);
  return absl::OkStatus();
}

absl::Status HostStatePool::Write(int slot, std::span<const uint8_t> in) {
  if (auto s = CheckSlot(slot); !s.ok()) return s;
  const size_t bytes = static_cast<size_t>(slot_floats()) * sizeof(float);
  if (in.size() != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("state blob is ", in.size(), " bytes, slot holds ", bytes));
  }
  std::memcpy(data_.data() + slot * slot_floats(), in.data(), bytes);
  return absl::OkStatus();
}

}  // namespace mambaserve
