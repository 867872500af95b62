#include "engine/model/dtype.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace mambaserve {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

absl::StatusOr<DType> ParseSafetensorsDType(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported tensor dtype \"", std::string(name),
                                                 "\" (supported: F32, F16, BF16)"));
}

absl::StatusOr<DType> ParseDTypeFlag(std::string_view name) {
  if (name == "f32") return DType::kF32;
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", std::string(name), "\" (expected f32, f16 or bf16)"));
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  float magnitude;
  if (exp == 0) {
    magnitude = std::ldexp(static_cast<float>(mant), -24);  // subnormal
  } else if (exp == 31) {
    magnitude = mant ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -magnitude : magnitude;
}

uint16_t F32ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (a < std::ldexp(1.0f, -14)) {
    // Subnormal: value = mant * 2^-24, round to nearest even.
    const float scaled = a * std::ldexp(1.0f, 24);
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  int e;
  const float m = std::frexp(a, &e);                         // a = m * 2^e, m in [0.5, 1)
  float mant = std::nearbyint((m * 2.0f - 1.0f) * 1024.0f);  // 10-bit fraction, ties to even
  int biased = e - 1 + 15;
  if (mant >= 1024.0f) {
    mant = 0.0f;
    ++biased;
  }
  if (biased >= 31) return sign | 0x7c00u;
  return sign | static_cast<uint16_t>(biased << 10) | static_cast<uint16_t>(mant);
}

void ConvertToF32(DType dtype, const void* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::kBF16:
    case DType::kF16: {
      // Checkpoint data need not be 2-byte aligned: load through memcpy.
      const auto* bytes = static_cast<const unsigned char*>(src);
      const bool is_bf16 = dtype == DType::kBF16;
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        dst[i] = is_bf16 ? Bf16ToF32(bits) : F16ToF32(bits);
      }
      return;
    }
  }
}

void ConvertF32ToBf16(const float* src, size_t count, uint16_t* dst) {
#pragma omp simd
  for (size_t i = 0; i < count; ++i) dst[i] = F32ToBf16(src[i]);
}

void RoundToBf16(const float* src, size_t count, float* dst) {
#pragma omp simd
  for (size_t i = 0; i < count; ++i) dst[i] = Bf16ToF32(F32ToBf16(src[i]));
}

}  // namespace mambaserve
