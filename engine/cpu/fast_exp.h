// expf that the compiler can vectorise: glibc's expf is a scalar call, and the selective scan
// evaluates one exp per (token, channel, state) — the single largest cost of a CPU prefill.
// Cody-Waite range reduction + a degree-6 polynomial: max relative error ~2e-7 (about 2 ulp) for
// x in [-87, 88]; inputs below -87 return 0 instead of a denormal.
#pragma once

#include <bit>
#include <cstdint>

namespace mambaserve::cpu {

inline float FastExp(float input) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;        // ln2 split so k*kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  const float x = input < -87.0f ? -87.0f : (input > 88.0f ? 88.0f : input);
  const float k = __builtin_floorf(x * kLog2e + 0.5f);
  const float r = (x - k * kLn2Hi) - k * kLn2Lo;  // |r| <= ln2/2
  // exp(r) on [-ln2/2, ln2/2] (Cephes expf coefficients).
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // Scale by 2^k through the exponent bits (k in [-126, 127] after the clamp).
  const float scale = std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
  const float result = p * scale;
  return input < -87.0f ? 0.0f : result;
}

}  // namespace mambaserve::cpu
