#pragma once
// mmcv's keep-ratio rescale as mmdetection 2.26's Resize(keep_ratio=True) applies it at test
// time, shared by the detectors: scale = min(long / long side, short / short side) in float64,
// new size int(x * scale + 0.5), cv2.resize INTER_LINEAR on the uint8 image.
#include <ATen/ATen.h>

#include <array>
#include <string>

namespace ptq4sam::detect {

struct KeepRatioResized {
  at::Tensor bgr;                     // new_h x new_w x 3 uint8, BGR
  std::array<float, 4> scale_factor;  // float32 [new_w / w, new_h / h, new_w / w, new_h / h]
};

// `bgr` H x W x 3 uint8. `who` names the detector in errors ("YOLOX"). Throws ptq4sam::Error
// when the image is no such tensor or would shrink to nothing or beyond the bounds.
KeepRatioResized keep_ratio_resize(const at::Tensor& bgr, int64_t long_edge, int64_t short_edge, const std::string& who);

}  // namespace ptq4sam::detect
