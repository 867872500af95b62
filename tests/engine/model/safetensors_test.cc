#include "engine/model/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mambaserve {
namespace {

using ::testing::HasSubstr;

// A safetensors image with the given JSON header and `data_bytes` zero bytes of data.
std::vector<unsigned char> Image(const std::string& header, size_t data_bytes) {
  std::vector<unsigned char> image(8 + header.size() + data_bytes, 0);
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<unsigned char>(len >> (8 * i));
  std::memcpy(image.data() + 8, header.data(), header.size());
  return image;
}

absl::Status ParseStatus(const std::vector<unsigned char>& image) {
  return ParseSafetensors(image, "m.safetensors").status();
}

TEST(SafetensorsTest, ParsesValidTensors) {
  auto image = Image(R"({"__metadata__":{"format":"pt"},)"
                     R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                     R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})",
                     32);
  auto views = ParseSafetensors(image, "m.safetensors");
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 2u);
  const TensorView& a = (*views)[0].name == "a" ? (*views)[0] : (*views)[1];
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.dtype, DType::kF32);
}

TEST(SafetensorsTest, RejectsTruncatedFile) {
  std::vector<unsigned char> image = {1, 2, 3};
  EXPECT_THAT(ParseStatus(image).message(), HasSubstr("truncated"));
}

TEST(SafetensorsTest, RejectsHeaderLengthPastEof) {
  auto image = Image(R"({})", 0);
  image[0] = 200;  // claims a 200-byte header in a 10-byte file
  EXPECT_THAT(ParseStatus(image).message(), HasSubstr("past end of file"));
}

TEST(SafetensorsTest, RejectsMalformedJson) {
  EXPECT_THAT(ParseStatus(Image(R"({"a": {"dtype": )", 0)).message(), HasSubstr("malformed JSON"));
  EXPECT_THAT(ParseStatus(Image(R"([1,2])", 0)).message(), HasSubstr("malformed JSON"));
}

TEST(SafetensorsTest, RejectsOutOfBoundsOffsets) {
  auto image = Image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  absl::Status s = ParseStatus(image);
  EXPECT_THAT(s.message(), HasSubstr("out of bounds"));
  EXPECT_THAT(s.message(), HasSubstr("\"a\""));
}

TEST(SafetensorsTest, RejectsReversedOffsets) {
  auto image = Image(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8);
  EXPECT_THAT(ParseStatus(image).message(), HasSubstr("out of bounds"));
}

TEST(SafetensorsTest, RejectsSizeMismatch) {
  auto image = Image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_THAT(ParseStatus(image).message(), HasSubstr("needs 12"));
}

TEST(SafetensorsTest, RejectsOverlappingTensors) {
  auto image = Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     12);
  EXPECT_THAT(ParseStatus(image).message(), HasSubstr("overlap"));
}

TEST(SafetensorsTest, RejectsOverlapHiddenBehindAnEmptyTensor) {
  auto image = Image(R"({"a":{"dtype":"F32","shape":[25],"data_offsets":[0,100]},)"
                     R"("z":{"dtype":"F32","shape":[0],"data_offsets":[50,50]},)"
                     R"("b":{"dtype":"F32","shape":[25],"data_offsets":[60,160]}})",
                     160);
  EXPECT_THAT(ParseStatus(image).message(), HasSubstr("overlap"));
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  auto image = Image(R"({"a":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,2]}})", 2);
  absl::Status s = ParseStatus(image);
  EXPECT_THAT(s.message(), HasSubstr("unsupported tensor dtype \"Q4_K\""));
}

TEST(SafetensorsTest, RejectsNegativeAndHugeShapes) {
  EXPECT_FALSE(
      ParseStatus(Image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0)).ok());
  EXPECT_FALSE(
      ParseStatus(
          Image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0))
          .ok());
}

TEST(SafetensorsTest, RejectsMissingFields) {
  EXPECT_THAT(ParseStatus(Image(R"({"a":{"dtype":"F32","shape":[1]}})", 4)).message(),
              HasSubstr("data_offsets"));
}

}  // namespace
}  // namespace mambaserve
