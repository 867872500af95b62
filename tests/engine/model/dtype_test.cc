#include "engine/model/dtype.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace mambaserve {
namespace {

TEST(DTypeTest, BulkBf16ConversionMatchesTheScalarOne) {
  // Every class of input (signed zeros, denormals, halfway cases, the largest finite values that
  // round up to infinity, infinities, NaNs of both signs with any payload) and random bit patterns,
  // over a length that leaves a vector tail.
  std::vector<uint32_t> bits = {0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x3f808000,
                                0x3f818000, 0x3f807fff, 0x7f7fffff, 0xff7fffff, 0x7f800000,
                                0xff800000, 0x7f800001, 0xffc00000, 0x7fbfffff};
  std::mt19937 rng(7);
  while (bits.size() < 100003) bits.push_back(static_cast<uint32_t>(rng()));
  std::vector<float> values(bits.size());
  std::memcpy(values.data(), bits.data(), bits.size() * sizeof(float));
  std::vector<uint16_t> out(values.size());
  ConvertF32ToBf16(values.data(), values.size(), out.data());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(out[i], F32ToBf16(values[i])) << "bits 0x" << std::hex << bits[i];
  }
  EXPECT_EQ(out[4], 0x3f80);                    // halfway, even below: down
  EXPECT_EQ(out[5], 0x3f82);                    // halfway, odd below: up
  EXPECT_EQ(out[7], 0x7f80);                    // rounds up to infinity
  EXPECT_TRUE(std::isnan(Bf16ToF32(out[11])));  // a NaN whose payload is only in the low bits

  // The same rounding kept as floats (what bf16 GEMMs multiply on the CPU).
  std::vector<float> rounded(values.size());
  RoundToBf16(values.data(), values.size(), rounded.data());
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t got;
    std::memcpy(&got, &rounded[i], sizeof got);
    ASSERT_EQ(got, static_cast<uint32_t>(out[i]) << 16) << "bits 0x" << std::hex << bits[i];
  }
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to the even mantissa (1.0).
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3*2^-8 is halfway too: rounds up to the even neighbour 1 + 2^-6.
  EXPECT_EQ(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(Bf16ToF32(0xc000), -2.0f);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
}

TEST(DTypeTest, F16RoundTripsRepresentableValues) {
  for (float v :
       {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f}) {
    EXPECT_EQ(F16ToF32(F32ToF16(v)), v) << v;
  }
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(1e6f))));
}

TEST(DTypeTest, F16RoundsToNearest) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
}

TEST(DTypeTest, ParsesNames) {
  EXPECT_EQ(*ParseSafetensorsDType("BF16"), DType::kBF16);
  EXPECT_FALSE(ParseSafetensorsDType("F64").ok());
  EXPECT_EQ(*ParseDTypeFlag("f16"), DType::kF16);
  EXPECT_FALSE(ParseDTypeFlag("fp8").ok());
}

}  // namespace
}  // namespace mambaserve
