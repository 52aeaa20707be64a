#include "detect/resnet.h"

#include "detect/conv_bn.h"
#include "detect/csp_layer.h"
#include "util/error.h"

namespace ptq4sam::detect {
namespace {

using kernels::ConvActivation;

kernels::Conv2d conv_bn(io::StateDict& state, const std::string& prefix, const std::string& conv, const std::string& bn,
                        int64_t stride, ConvActivation activation) {
  return load_conv_bn(state, prefix + "." + conv + ".weight", prefix + "." + bn, stride, kResNetBatchNormEps, activation);
}

}  // namespace

Bottleneck::Bottleneck(io::StateDict& state, const std::string& prefix, int64_t stride)
    : conv1_(conv_bn(state, prefix, "conv1", "bn1", 1, ConvActivation::kRelu)),
      conv2_(conv_bn(state, prefix, "conv2", "bn2", stride, ConvActivation::kRelu)),
      conv3_(conv_bn(state, prefix, "conv3", "bn3", 1, ConvActivation::kRelu)) {
  if (state.contains(prefix + ".downsample.0.weight"))
    downsample_.emplace(conv_bn(state, prefix, "downsample.0", "downsample.1", stride, ConvActivation::kNone));
  const int64_t in = conv1_.in_channels();
  const bool widths_chain = conv1_.out_channels() == conv2_.in_channels() && conv2_.out_channels() == conv3_.in_channels();
  const bool identity_fits = downsample_ ? downsample_->in_channels() == in && downsample_->out_channels() == out_channels()
                                         : in == out_channels() && stride == 1;
  if (!widths_chain || !identity_fits)
    throw Error(state.source(), "'" + prefix + "' has inconsistent Bottleneck widths");
}

at::Tensor Bottleneck::forward(const at::Tensor& x) const {
  const at::Tensor identity = downsample_ ? downsample_->forward(x) : x;
  return conv3_.forward(conv2_.forward(conv1_.forward(x)), identity);
}

ResNet::ResNet(io::StateDict& state, const std::string& prefix)
    : stem_(conv_bn(state, prefix, "conv1", "bn1", 2, ConvActivation::kRelu)) {
  if (stem_.in_channels() != 3 || stem_.kernel_size() != 7)
    throw Error(state.source(), "'" + prefix + ".conv1.weight' must be a 7x7 convolution of 3 channels");
  int64_t width = stem_.out_channels();
  for (size_t layer = 0; layer < 4; ++layer) {
    const std::string name = prefix + ".layer" + std::to_string(layer + 1);
    const size_t n = count_indexed(state, name, "conv1.weight");
    if (n == 0) throw Error(state.source(), "missing '" + name + ".0.conv1.weight'");
    for (size_t i = 0; i < n; ++i) {
      const std::string block = name + "." + std::to_string(i);
      layers_[layer].emplace_back(state, block, i == 0 && layer > 0 ? 2 : 1);
      if (layers_[layer].back().in_channels() != width)
        throw Error(state.source(), "'" + block + "' takes " + std::to_string(layers_[layer].back().in_channels()) +
                                        " channels where " + std::to_string(width) + " come in");
      width = layers_[layer].back().out_channels();
    }
  }
}

std::array<int64_t, 4> ResNet::out_channels() const {
  return {layers_[0].back().out_channels(), layers_[1].back().out_channels(), layers_[2].back().out_channels(),
          layers_[3].back().out_channels()};
}

std::array<int64_t, 4> ResNet::blocks() const {
  return {int64_t(layers_[0].size()), int64_t(layers_[1].size()), int64_t(layers_[2].size()), int64_t(layers_[3].size())};
}

std::array<at::Tensor, 4> ResNet::forward(const at::Tensor& image) const {
  // The stem's max pool: 3x3, stride 2, padding 1 (padded cells never win).
  at::Tensor x = at::max_pool2d(stem_.forward(image), {3, 3}, {2, 2}, {1, 1});
  std::array<at::Tensor, 4> outs;
  for (size_t layer = 0; layer < 4; ++layer) {
    for (const Bottleneck& block : layers_[layer]) x = block.forward(x);
    outs[layer] = x;
  }
  return outs;
}

}  // namespace ptq4sam::detect
