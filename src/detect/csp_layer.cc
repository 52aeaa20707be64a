#include "detect/csp_layer.h"

#include "util/error.h"

namespace ptq4sam::detect {
namespace {

at::Tensor take(io::StateDict& state, const std::string& name, int64_t dim) {
  at::Tensor t = state.take(name);
  if (t.dim() != dim || !t.is_floating_point() || t.numel() == 0)
    throw Error(state.source(), "'" + name + "' must be a non-empty " + std::to_string(dim) + "-d float tensor");
  return t;
}

}  // namespace

kernels::Conv2d load_conv_module(io::StateDict& state, const std::string& prefix, int64_t stride) {
  const at::Tensor weight = take(state, prefix + ".conv.weight", 4).to(at::kDouble);
  const int64_t out = weight.size(0);
  if (weight.size(2) != weight.size(3) || weight.size(2) % 2 == 0)
    throw Error(state.source(), "'" + prefix + ".conv.weight' must have an odd square kernel");
  at::Tensor bn[4];
  const char* const names[] = {"weight", "bias", "running_mean", "running_var"};
  for (int i = 0; i < 4; ++i) {
    bn[i] = take(state, prefix + ".bn." + names[i], 1).to(at::kDouble);
    if (bn[i].size(0) != out)
      throw Error(state.source(), "'" + prefix + ".bn." + names[i] + "' has " + std::to_string(bn[i].size(0)) +
                                      " values for " + std::to_string(out) + " channels");
  }
  if ((bn[3] < 0).any().item<bool>()) throw Error(state.source(), "'" + prefix + ".bn.running_var' has negative values");
  const at::Tensor factor = bn[0] / at::sqrt(bn[3] + kYoloxBatchNormEps);
  const at::Tensor folded_weight = (weight * factor.view({-1, 1, 1, 1})).to(at::kFloat);
  const at::Tensor folded_bias = (bn[1] - bn[2] * factor).to(at::kFloat);
  return kernels::Conv2d(folded_weight, folded_bias, stride, (weight.size(2) - 1) / 2, kernels::ConvActivation::kSilu);
}

kernels::Conv2d load_conv(io::StateDict& state, const std::string& prefix) {
  const at::Tensor weight = take(state, prefix + ".weight", 4);
  const at::Tensor bias = take(state, prefix + ".bias", 1);
  if (bias.size(0) != weight.size(0) || weight.size(2) != weight.size(3) || weight.size(2) % 2 == 0)
    throw Error(state.source(), "'" + prefix + "' has mismatched weight and bias shapes");
  return kernels::Conv2d(weight.to(at::kFloat), bias.to(at::kFloat), 1, (weight.size(2) - 1) / 2);
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
