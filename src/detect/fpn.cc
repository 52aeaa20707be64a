#include "detect/fpn.h"

#include "detect/conv_bn.h"
#include "util/error.h"

namespace ptq4sam::detect {

FPN::FPN(io::StateDict& state, const std::string& prefix) {
  for (size_t i = 0; i < 4; ++i) {
    lateral_convs_.push_back(load_conv(state, prefix + ".lateral_convs." + std::to_string(i) + ".conv"));
    fpn_convs_.push_back(load_conv(state, prefix + ".fpn_convs." + std::to_string(i) + ".conv"));
    if (lateral_convs_.back().kernel_size() != 1 || fpn_convs_.back().kernel_size() != 3 ||
        lateral_convs_.back().out_channels() != fpn_convs_.front().in_channels() ||
        fpn_convs_.back().out_channels() != fpn_convs_.front().in_channels())
      throw Error(state.source(), "'" + prefix + "' level " + std::to_string(i) +
                                      " needs a 1x1 lateral and a 3x3 output convolution of one width");
  }
}

std::array<int64_t, 4> FPN::in_channels() const {
  return {lateral_convs_[0].in_channels(), lateral_convs_[1].in_channels(), lateral_convs_[2].in_channels(),
          lateral_convs_[3].in_channels()};
}

at::Tensor upsample_nearest(const at::Tensor& x, int64_t height, int64_t width) {
  // ATen's upsample_nearest2d with an output size and no scales is exactly this legacy rule.
  return at::upsample_nearest2d(x, {height, width});
}

std::array<at::Tensor, 5> FPN::forward(const std::array<at::Tensor, 4>& features) const {
  std::array<at::Tensor, 4> laterals;
  for (size_t i = 0; i < 4; ++i) laterals[i] = lateral_convs_[i].forward(features[i]);
  for (size_t i = 3; i >= 1; --i)
    laterals[i - 1].add_(upsample_nearest(laterals[i], laterals[i - 1].size(2), laterals[i - 1].size(3)));
  std::array<at::Tensor, 5> outs;
  for (size_t i = 0; i < 4; ++i) outs[i] = fpn_convs_[i].forward(laterals[i]);
  // max_pool2d(P5, kernel 1, stride 2): every other row and column from the first.
  outs[4] = at::max_pool2d(outs[3], {1, 1}, {2, 2}).contiguous(at::MemoryFormat::ChannelsLast);
  return outs;
}

}  // namespace ptq4sam::detect
