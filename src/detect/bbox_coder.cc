#include "detect/bbox_coder.h"

#include <algorithm>
#include <cmath>

namespace ptq4sam::detect {

std::vector<Box> level_anchors(int64_t stride, int64_t height, int64_t width, const std::vector<float>& ratios,
                               float scale) {
  std::vector<Box> base;
  const float size = float(stride);
  for (const float ratio : ratios) {
    const float h_ratio = std::sqrt(ratio);
    const float w_ratio = 1.0f / h_ratio;
    const float w = size * w_ratio * scale, h = size * h_ratio * scale;
    base.push_back({0.0f - 0.5f * w, 0.0f - 0.5f * h, 0.0f + 0.5f * w, 0.0f + 0.5f * h});
  }
  std::vector<Box> anchors;
  anchors.reserve(size_t(height * width) * base.size());
  for (int64_t row = 0; row < height; ++row) {
    const float y = float(row) * size;
    for (int64_t col = 0; col < width; ++col) {
      const float x = float(col) * size;
      for (const Box& b : base) anchors.push_back({b.x0 + x, b.y0 + y, b.x1 + x, b.y1 + y});
    }
  }
  return anchors;
}

Box decode_delta(const Box& anchor, const float* delta, const DeltaCoder& coder, float max_width, float max_height) {
  // wh_ratio_clip 16 / 1000, as the float32 clamp bound the Python float becomes.
  const float max_ratio = float(std::abs(std::log(16.0 / 1000.0)));
  const float dx = delta[0] * coder.stds[0], dy = delta[1] * coder.stds[1];
  const float dw = std::clamp(delta[2] * coder.stds[2], -max_ratio, max_ratio);
  const float dh = std::clamp(delta[3] * coder.stds[3], -max_ratio, max_ratio);
  const float px = (anchor.x0 + anchor.x1) * 0.5f, py = (anchor.y0 + anchor.y1) * 0.5f;
  const float pw = anchor.x1 - anchor.x0, ph = anchor.y1 - anchor.y0;
  const float gx = px + pw * dx, gy = py + ph * dy;
  const float gw = pw * std::exp(dw), gh = ph * std::exp(dh);
  const auto clip = [](float v, float hi) { return std::min(std::max(v, 0.0f), hi); };
  return {clip(gx - gw * 0.5f, max_width), clip(gy - gh * 0.5f, max_height), clip(gx + gw * 0.5f, max_width),
          clip(gy + gh * 0.5f, max_height)};
}

}  // namespace ptq4sam::detect
