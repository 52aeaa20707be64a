#pragma once
// The box arithmetic of mmdetection 2.26's two-stage detectors, in float32 and in the order of
// its tensor ops: AnchorGenerator's anchors and DeltaXYWHBBoxCoder's decoding.
#include <array>
#include <cstdint>
#include <vector>

#include "detect/nms.h"

namespace ptq4sam::detect {

// AnchorGenerator(strides [s], ratios, scales [scale]) at one level of `height` x `width`:
// base size = stride, centre offset 0 (anchors centred on (col * s, row * s)), h_ratio =
// sqrt(ratio), w_ratio = 1 / h_ratio, w = s * w_ratio * scale. Order: row, column, then ratio.
std::vector<Box> level_anchors(int64_t stride, int64_t height, int64_t width, const std::vector<float>& ratios,
                               float scale);

struct DeltaCoder {
  std::array<float, 4> stds{1, 1, 1, 1};  // target_stds (means are 0 in every config the seed uses)
};

// delta2bbox: centre + size * (dx, dy) * std, size * exp(clamp(dw * std, +-|log(16 / 1000)|)),
// corners clipped to [0, max_width] x [0, max_height].
Box decode_delta(const Box& anchor, const float* delta, const DeltaCoder& coder, float max_width, float max_height);

}  // namespace ptq4sam::detect
