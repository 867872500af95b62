#include "engine/backend/greedy.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/mamba_math.h"

namespace mambaserve {
namespace {

TEST(GreedyTokenTest, PicksTheLargestAndTheLowestIndexOnTies) {
  EXPECT_EQ(GreedyToken(std::vector<float>{1, 5, 3, 5, -2}), 1);
  EXPECT_EQ(GreedyToken(std::vector<float>{-3, -1, -1}), 1);
  EXPECT_EQ(GreedyToken(std::vector<float>{0.0f, -0.0f}), 0);  // -0 == +0: the first
  EXPECT_EQ(GreedyToken(std::vector<float>{-0.0f, 0.0f}), 0);
  EXPECT_EQ(GreedyToken(std::vector<float>{7}), 0);
  EXPECT_EQ(GreedyToken(std::vector<float>{}), 0);
}

TEST(GreedyTokenTest, RefusesRowsWithANonFiniteValueAnywhere) {
  const float inf = std::numeric_limits<float>::infinity();
  for (size_t where : {0u, 17u, 99u}) {
    for (float bad : {std::nanf(""), inf, -inf}) {
      std::vector<float> row(100, 1.0f);
      row[where] = bad;
      EXPECT_EQ(GreedyToken(row), math::kNonFiniteRow) << where << " " << bad;
    }
  }
}

// Rows of many ties (few distinct values) and of random values: the same token as ArgMax, the
// order the CUDA argmax kernel also reduces in.
TEST(GreedyTokenTest, AgreesWithArgMaxOnRandomRows) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> row(1 + rng() % 5000);
    const bool ties = trial % 2 == 0;
    for (float& v : row) {
      v = ties ? static_cast<float>(rng() % 4) : std::normal_distribution<float>()(rng);
    }
    ASSERT_EQ(GreedyToken(row), ArgMax(row)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace mambaserve
