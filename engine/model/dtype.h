// Element types the engine reads from checkpoints and keeps weights in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace mambaserve {

enum class DType { kF32, kF16, kBF16 };

size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "F16", "BF16".
const char* DTypeName(DType dtype);
absl::StatusOr<DType> ParseSafetensorsDType(std::string_view name);
// Command-line spelling: "f32", "f16", "bf16".
absl::StatusOr<DType> ParseDTypeFlag(std::string_view name);

inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round-to-nearest-even, as torch's .to(torch.bfloat16); NaN stays NaN (quieted). The NaN case is
// a select, not an early return, so loops over it vectorise (ConvertF32ToBf16).
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float f);

// Converts `count` elements of `dtype` at `src` to f32.
void ConvertToF32(DType dtype, const void* src, size_t count, float* dst);
// F32ToBf16 over `count` floats, vectorised (it rounds every activation row oneDNN multiplies).
void ConvertF32ToBf16(const float* src, size_t count, uint16_t* dst);
// `count` floats rounded to the nearest bf16 (ties to even), kept as floats.
void RoundToBf16(const float* src, size_t count, float* dst);

}  // namespace mambaserve
