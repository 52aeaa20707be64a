#pragma once
// RoIAlign as mmcv 1.7's CPU kernel computes it (ops/csrc/pytorch/cpu/roi_align.cpp), average
// pooling, the variant mmdetection's two-stage heads use: aligned=True (pixel centres at
// +0.5) and sampling_ratio 0 (ceil(bin size) samples per bin and axis, at least one).
#include <ATen/ATen.h>

#include <array>
#include <vector>

namespace ptq4sam::kernels {

// features: (1, C, H, W) float32 (channels-last avoids a copy). rois: x1, y1, x2, y2 in input
// pixels; spatial_scale = 1 / stride. Returns (R, out, out, C) contiguous: bins row-major,
// channels innermost. Samples follow the Caffe2 border rules: a sample beyond one pixel
// outside the map contributes 0, one within is clamped to the border. Throws for a RoI of
// negative size.
at::Tensor roi_align(const at::Tensor& features, const std::vector<std::array<float, 4>>& rois, float spatial_scale,
                     int64_t out_size = 7);

}  // namespace ptq4sam::kernels
