#include "engine/backend/cpu/huge_page_allocator.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace mambaserve::cpu {
namespace {

TEST(HugePageAllocatorTest, LargeBlocksAreHugePageAlignedAndUsable) {
  constexpr size_t kFloats = (size_t{5} << 20) / sizeof(float);  // 5 MiB
  std::vector<float, HugePageAllocator<float>> weights(kFloats, 1.5f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(weights.data()) % HugePageAllocator<float>::kHugePage, 0u);
  weights.back() = 2.5f;
  EXPECT_EQ(weights.front(), 1.5f);
  EXPECT_EQ(weights.back(), 2.5f);
}

// A size that is no multiple of 2 MiB: the tail past the last whole huge page is usable too.
TEST(HugePageAllocatorTest, APartialLastHugePageIsUsable) {
  constexpr size_t kElements = ((size_t{5} << 20) + 4100) / sizeof(uint16_t);
  std::vector<uint16_t, HugePageAllocator<uint16_t>> weights(kElements, 3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(weights.data()) % HugePageAllocator<float>::kHugePage, 0u);
  for (size_t i = kElements - 4096; i < kElements; ++i) weights[i] = static_cast<uint16_t>(i);
  EXPECT_EQ(weights[kElements - 1], static_cast<uint16_t>(kElements - 1));
  EXPECT_EQ(weights[0], 3);
}

TEST(HugePageAllocatorTest, SmallBlocksComeFromTheHeap) {
  std::vector<uint16_t, HugePageAllocator<uint16_t>> small(100, 7);
  EXPECT_EQ(small[99], 7);
  std::vector<uint16_t, HugePageAllocator<uint16_t>> empty;
  empty.reserve(0);
  EXPECT_TRUE(empty.empty());
}

}  // namespace
}  // namespace mambaserve::cpu
