#include "detect/csp_layer.h"

#include "util/error.h"

namespace ptq4sam::detect {

kernels::Conv2d load_conv_module(io::StateDict& state, const std::string& prefix, int64_t stride) {
  return load_conv_bn(state, prefix + ".conv.weight", prefix + ".bn", stride, kYoloxBatchNormEps,
                      kernels::ConvActivation::kSilu);
}

size_t count_indexed(const io::StateDict& state, const std::string& prefix, const std::string& suffix) {
  size_t n = 0;
  while (state.contains(prefix + "." + std::to_string(n) + "." + suffix)) ++n;
  return n;
}

DarknetBottleneck::DarknetBottleneck(io::StateDict& state, const std::string& prefix, bool add_identity)
    : conv1_(load_conv_module(state, prefix + ".conv1")),
      conv2_(load_conv_module(state, prefix + ".conv2")),
      add_identity_(add_identity && conv1_.in_channels() == conv2_.out_channels()) {
  if (conv1_.out_channels() != conv2_.in_channels())
    throw Error(state.source(), "'" + prefix + "' conv1 and conv2 widths differ");
}

at::Tensor DarknetBottleneck::forward(const at::Tensor& x) const {
  at::Tensor out = conv2_.forward(conv1_.forward(x));
  if (add_identity_) out.add_(x);
  return out;
}

CSPLayer::CSPLayer(io::StateDict& state, const std::string& prefix, bool add_identity)
    : main_conv_(load_conv_module(state, prefix + ".main_conv")),
      short_conv_(load_conv_module(state, prefix + ".short_conv")),
      final_conv_(load_conv_module(state, prefix + ".final_conv")) {
  const size_t n = count_indexed(state, prefix + ".blocks", "conv1.conv.weight");
  for (size_t i = 0; i < n; ++i) blocks_.emplace_back(state, prefix + ".blocks." + std::to_string(i), add_identity);
  if (main_conv_.in_channels() != short_conv_.in_channels() ||
      final_conv_.in_channels() != main_conv_.out_channels() + short_conv_.out_channels())
    throw Error(state.source(), "'" + prefix + "' has inconsistent CSP widths");
}

at::Tensor CSPLayer::forward(const at::Tensor& x) const {
  at::Tensor main = main_conv_.forward(x);
  for (const auto& block : blocks_) main = block.forward(main);
  const at::Tensor cat = at::cat({main, short_conv_.forward(x)}, 1).contiguous(at::MemoryFormat::ChannelsLast);
  return final_conv_.forward(cat);
}

SPPBottleneck::SPPBottleneck(io::StateDict& state, const std::string& prefix)
    : conv1_(load_conv_module(state, prefix + ".conv1")), conv2_(load_conv_module(state, prefix + ".conv2")) {
  if (conv2_.in_channels() != 4 * conv1_.out_channels())
    throw Error(state.source(), "'" + prefix + "' conv2 must take four times conv1's width");
}

at::Tensor SPPBottleneck::forward(const at::Tensor& x) const {
  const at::Tensor y = conv1_.forward(x);
  std::vector<at::Tensor> pooled{y};
  for (const int64_t k : {5, 9, 13}) pooled.push_back(at::max_pool2d(y, {k, k}, {1, 1}, {k / 2, k / 2}));
  return conv2_.forward(at::cat(pooled, 1).contiguous(at::MemoryFormat::ChannelsLast));
}

}  // namespace ptq4sam::detect
