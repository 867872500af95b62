// exp / log1p / softplus / SiLU that the compiler can vectorise: glibc's are scalar calls, and the
// CPU engine evaluates one exp per (token, channel, state) in the scan and a softplus and two SiLUs
// per (token, channel). Inline, branch-free (selects only), accurate to a few ulp.
#pragma once

#include <bit>
#include <cstdint>

namespace mambaserve::cpu {

// Cody-Waite range reduction + a degree-6 polynomial: max relative error ~2e-7 (about 2 ulp) for
// x in [-87, 88]; inputs below -87 return 0 instead of a denormal.
inline float FastExp(float input) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln2 split so k*kLn2Hi is exact
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
  // Scale by 2^k through the exponent bits (k in [-126, 127] after the clamp). A NaN input passes
  // the clamp as NaN; converting that to an integer is undefined, so k is zeroed for it (the
  // result is NaN through p all the same, which is what lets non-finite logits be detected).
  const float k_finite = k == k ? k : 0.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(k_finite) + 127) << 23);
  const float result = p * scale;
  return input < -87.0f ? 0.0f : result;
}

// log(x) for finite x > 0 (Cephes logf: mantissa in [sqrt(1/2), sqrt(2)), degree-8 polynomial),
// max relative error ~2 ulp. Denormals are not expected here (arguments are >= 1).
inline float FastLog(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);
  int32_t e = ((bits >> 23) & 0xff) - 126;  // x = m * 2^e, m in [0.5, 1)
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);
  const bool small = m < 0.707106781186547524f;
  e -= small ? 1 : 0;
  m = small ? m + m - 1.0f : m - 1.0f;  // m - 1 in [-0.29, 0.41)
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// log(1 + u) for u >= 0 without the cancellation of log(1 + u) for small u: with w = 1 + u
// rounded, log(w) * u / (w - 1) is accurate to a few ulp (Goldberg's correction).
inline float FastLog1p(float u) {
  const float w = 1.0f + u;
  const float d = w - 1.0f;
  return d == 0.0f ? u : FastLog(w) * (u / d);
}

// torch's softplus (threshold 20), as math::Softplus but vectorisable.
inline float FastSoftplus(float x) { return x <= 20.0f ? FastLog1p(FastExp(x)) : x; }

inline float FastSilu(float x) { return x / (1.0f + FastExp(-x)); }

}  // namespace mambaserve::cpu
