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

TEST(HugePageAllocatorTest, SmallBlocksComeFromTheHeap) {
  std::vector<uint16_t, HugePageAllocator<uint16_t>> small(100, 7);
  EXPECT_EQ(small[99], 7);
  std::vector<uint16_t, HugePageAllocator<uint16_t>> empty;
  empty.reserve(0);
  EXPECT_TRUE(empty.empty());
}

}  // namespace
}  // namespace mambaserve::cpu
