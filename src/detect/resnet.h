#pragma once
// ResNet as mmdetection 2.26 builds it for Faster R-CNN (mmdet/models/backbones/resnet.py,
// style 'pytorch', norm_eval): a 7x7/2 stem with batch norm and ReLU, a 3x3/2 max pool, then
// four layers of Bottleneck blocks; the stride of a layer's first block sits on its 3x3 conv2
// and its 1x1 downsample. Batch norm (eps 1e-5, running statistics) is folded at load. Widths
// and block counts come from the tensor shapes (mmdetection's names: `conv1`, `bn1`,
// `layer1..4`), so ResNet-50, -101 and narrow test networks load alike.
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "kernels/conv2d.h"

namespace ptq4sam::detect {

// Batch-norm epsilon of torch.nn.BatchNorm2d, which mmdetection's ResNet uses.
constexpr double kResNetBatchNormEps = 1e-5;

// relu(conv3(conv2(conv1(x))) + identity), identity = downsample(x) where the block changes
// the width or the stride.
class Bottleneck {
 public:
  Bottleneck(io::StateDict& state, const std::string& prefix, int64_t stride);
  at::Tensor forward(const at::Tensor& x) const;
  int64_t in_channels() const { return conv1_.in_channels(); }
  int64_t out_channels() const { return conv3_.out_channels(); }

 private:
  kernels::Conv2d conv1_, conv2_, conv3_;
  std::optional<kernels::Conv2d> downsample_;
};

class ResNet {
 public:
  // `prefix` is "backbone".
  ResNet(io::StateDict& state, const std::string& prefix);
  // C2..C5 (strides 4, 8, 16, 32), channels-last. Any input size: each stride-2 step gives
  // ceil(n / 2) as PyTorch's convolutions and pooling do.
  std::array<at::Tensor, 4> forward(const at::Tensor& image) const;
  int64_t base_channels() const { return stem_.out_channels(); }
  std::array<int64_t, 4> out_channels() const;
  std::array<int64_t, 4> blocks() const;

 private:
  kernels::Conv2d stem_;
  std::array<std::vector<Bottleneck>, 4> layers_;
};

}  // namespace ptq4sam::detect
