// ResizeLongestSide: Pillow's bilinear resize, checked on values worked out by hand from
// Pillow's algorithm (triangle filter widened by the scale factor, 22-bit fixed point).
#include <gtest/gtest.h>

#include "sam/transforms.h"

namespace ptq4sam {
namespace {

at::Tensor row_image(const std::vector<int>& values) {
  at::Tensor t = at::empty({1, int64_t(values.size()), 1}, at::kByte);
  for (size_t i = 0; i < values.size(); ++i) t[0][i][0] = values[i];
  return t;
}

std::vector<int> row_values(const at::Tensor& t) {
  std::vector<int> v;
  for (int64_t i = 0; i < t.size(1); ++i) v.push_back(t[0][i][0].item<int>());
  return v;
}

TEST(Transforms, PreprocessShapeRoundsAsTheOfficialCode) {
  EXPECT_EQ(sam::get_preprocess_shape(534, 800, 1024), (std::pair<int64_t, int64_t>{684, 1024}));
  EXPECT_EQ(sam::get_preprocess_shape(480, 640, 1024), (std::pair<int64_t, int64_t>{768, 1024}));
  EXPECT_EQ(sam::get_preprocess_shape(2000, 1500, 1024), (std::pair<int64_t, int64_t>{1024, 768}));
}

TEST(Transforms, ShrinkingAntialiasesOverTheWiderSupport) {
  // 4 -> 2: scale 2, support 2. Output 0 has centre 1.0 and reads inputs 0..2 with triangle
  // weights 0.75, 0.75, 0.25 (normalised 3/7, 3/7, 1/7); output 1 (centre 3.0) reads 1..3 with
  // 0.25, 0.75, 0.75.
  const at::Tensor out = sam::pil_resize_bilinear(row_image({0, 70, 140, 210}), 1, 2);
  // (0*3 + 70*3 + 140) / 7 = 50; (70 + 140*3 + 210*3) / 7 = 160.
  EXPECT_EQ(row_values(out), (std::vector<int>{50, 160}));
}

TEST(Transforms, EnlargingInterpolatesBetweenNeighbours) {
  // 2 -> 4: scale 0.5, support 1. Centres 0.25, 0.75, 1.25, 1.75: output 0 reads input 0
  // only (the edge), output 1 mixes inputs 0 and 1 with 0.75/0.25, output 2 with 0.25/0.75.
  const at::Tensor out = sam::pil_resize_bilinear(row_image({0, 200}), 1, 4);
  EXPECT_EQ(row_values(out), (std::vector<int>{0, 50, 150, 200}));
}

TEST(Transforms, ConstantImageStaysConstantBothWays) {
  const at::Tensor image = at::full({37, 53, 3}, 123, at::kByte);
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{11, 16}, {100, 143}, {37, 100}}) {
    const at::Tensor out = sam::pil_resize_bilinear(image, h, w);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{h, w, 3}));
    EXPECT_TRUE((out == 123).all().item<bool>());
  }
}

TEST(Transforms, SeparableInBothAxes) {
  // A vertical ramp resized in both axes equals the 1-D result on every column.
  at::Tensor image = at::empty({4, 5, 1}, at::kByte);
  for (int y = 0; y < 4; ++y) image.select(0, y).fill_(y * 70);
  const at::Tensor out = sam::pil_resize_bilinear(image, 2, 3);
  for (int64_t x = 0; x < 3; ++x) {
    EXPECT_EQ(out[0][x][0].item<int>(), 50);
    EXPECT_EQ(out[1][x][0].item<int>(), 160);
  }
}

TEST(Transforms, CoordinatesScaleWithTheResize) {
  const sam::ResizeLongestSide transform(1024);
  const at::Tensor coords = at::tensor({800.0, 534.0, 400.0, 267.0}, at::kDouble).view({2, 2});
  const at::Tensor out = transform.apply_coords(coords, {534, 800});
  EXPECT_DOUBLE_EQ(out[0][0].item<double>(), 1024.0);
  EXPECT_DOUBLE_EQ(out[0][1].item<double>(), 684.0);
  EXPECT_DOUBLE_EQ(out[1][0].item<double>(), 512.0);
  const at::Tensor boxes = transform.apply_boxes(at::tensor({0.0, 0.0, 800.0, 534.0}, at::kDouble).view({1, 4}), {534, 800});
  EXPECT_DOUBLE_EQ(boxes[0][2].item<double>(), 1024.0);
  EXPECT_DOUBLE_EQ(boxes[0][3].item<double>(), 684.0);
}

}  // namespace
}  // namespace ptq4sam
