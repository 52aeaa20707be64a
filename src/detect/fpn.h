#pragma once
// mmdetection 2.26's FPN (mmdet/models/necks/fpn.py) as Faster R-CNN R50-FPN configures it:
// 1x1 lateral convolutions, a top-down path that adds each coarser map upsampled by nearest
// neighbour to the size of the finer one, 3x3 output convolutions (all with bias, no norm, no
// activation), and one extra level by max pooling (add_extra_convs=False): P6 = P5[::2, ::2].
#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "kernels/conv2d.h"

namespace ptq4sam::detect {

class FPN {
 public:
  // `prefix` is "neck": `<prefix>.lateral_convs.<i>.conv` and `<prefix>.fpn_convs.<i>.conv`.
  FPN(io::StateDict& state, const std::string& prefix);
  // C2..C5 -> P2..P6 (channels-last). The upsampling takes the finer map's size, as
  // F.interpolate(size=...) does: without padding to a multiple of 32 the sizes are not
  // always an exact 2x.
  std::array<at::Tensor, 5> forward(const std::array<at::Tensor, 4>& features) const;
  int64_t out_channels() const { return fpn_convs_.front().out_channels(); }
  std::array<int64_t, 4> in_channels() const;

 private:
  std::vector<kernels::Conv2d> lateral_convs_, fpn_convs_;
};

// F.interpolate(x, size=(h, w), mode='nearest') of PyTorch: source index min(floor(dst *
// float(in / out)), in - 1) per axis.
at::Tensor upsample_nearest(const at::Tensor& x, int64_t height, int64_t width);

}  // namespace ptq4sam::detect
