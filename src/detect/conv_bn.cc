#include "detect/conv_bn.h"

#include "util/error.h"

namespace ptq4sam::detect {

at::Tensor take_float(io::StateDict& state, const std::string& name, int64_t dim) {
  at::Tensor t = state.take(name);
  if (t.dim() != dim || !t.is_floating_point() || t.numel() == 0)
    throw Error(state.source(), "'" + name + "' must be a non-empty " + std::to_string(dim) + "-d float tensor");
  // A published detector's weights are finite; NaN or infinity means a damaged file, which
  // would otherwise surface as silently empty or arbitrary detections.
  if (!at::isfinite(t).all().item<bool>()) throw Error(state.source(), "'" + name + "' holds NaN or infinite values");
  return t;
}

namespace {

void check_odd_square(const io::StateDict& state, const std::string& name, const at::Tensor& weight) {
  if (weight.size(2) != weight.size(3) || weight.size(2) % 2 == 0)
    throw Error(state.source(), "'" + name + "' must have an odd square kernel");
}

}  // namespace

kernels::Conv2d load_conv_bn(io::StateDict& state, const std::string& weight_key, const std::string& bn_prefix,
                             int64_t stride, double eps, kernels::ConvActivation activation) {
  const at::Tensor weight = take_float(state, weight_key, 4).to(at::kDouble);
  check_odd_square(state, weight_key, weight);
  const int64_t out = weight.size(0);
  at::Tensor bn[4];
  const char* const names[] = {"weight", "bias", "running_mean", "running_var"};
  for (int i = 0; i < 4; ++i) {
    bn[i] = take_float(state, bn_prefix + "." + names[i], 1).to(at::kDouble);
    if (bn[i].size(0) != out)
      throw Error(state.source(), "'" + bn_prefix + "." + names[i] + "' has " + std::to_string(bn[i].size(0)) +
                                      " values for " + std::to_string(out) + " channels");
  }
  if ((bn[3] < 0).any().item<bool>()) throw Error(state.source(), "'" + bn_prefix + ".running_var' has negative values");
  const at::Tensor factor = bn[0] / at::sqrt(bn[3] + eps);
  const at::Tensor folded_weight = (weight * factor.view({-1, 1, 1, 1})).to(at::kFloat);
  const at::Tensor folded_bias = (bn[1] - bn[2] * factor).to(at::kFloat);
  return kernels::Conv2d(folded_weight, folded_bias, stride, (weight.size(2) - 1) / 2, activation);
}

kernels::Conv2d load_conv(io::StateDict& state, const std::string& prefix, int64_t stride,
                          kernels::ConvActivation activation) {
  const at::Tensor weight = take_float(state, prefix + ".weight", 4);
  const at::Tensor bias = take_float(state, prefix + ".bias", 1);
  check_odd_square(state, prefix + ".weight", weight);
  if (bias.size(0) != weight.size(0)) throw Error(state.source(), "'" + prefix + "' has mismatched weight and bias shapes");
  return kernels::Conv2d(weight.to(at::kFloat), bias.to(at::kFloat), stride, (weight.size(2) - 1) / 2, activation);
}

}  // namespace ptq4sam::detect
