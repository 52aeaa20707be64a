#include "sam/common.h"

namespace ptq4sam::sam {
namespace {

at::Tensor empty_param(torch::nn::Module& m, const char* name, at::IntArrayRef shape) {
  return m.register_parameter(name, torch::empty(shape), /*requires_grad=*/false);
}

}  // namespace

at::Tensor quantized_matmul(const LayerQuantPoints& quant, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, Activation activation, Numerics numerics) {
  if (quant.integer) return kernels::quantized_linear(x, *quant.integer, activation);
  const at::Tensor xq = quantize_at(quant.input, x);
  const at::Tensor wq = quantize_at(quant.weight, weight);
  const at::Tensor w2 = wq.reshape({wq.size(0), -1});
  const at::Tensor x_step = quant.input ? quant.input->grid_step() : at::Tensor();
  const at::Tensor w_step = quant.weight ? quant.weight->grid_step() : at::Tensor();
  if (x_step.defined() && x_step.numel() == 1 && w_step.defined() && !kernels::needs_autograd(xq, w2)) {
    const at::Tensor w_steps = w_step.numel() == 1 ? w_step.expand({w2.size(0)}) : w_step;
    // The fake-quantized values are (code - zero point) * step: dividing gives the centred
    // codes back exactly.
    const at::Tensor a_codes = at::round(xq / x_step);
    const at::Tensor w_codes = at::round(w2 / w_steps.reshape({-1, 1}));
    return kernels::code_linear(a_codes, w_codes, x_step * w_steps, bias, activation);
  }
  return kernels::linear(xq, w2, bias, activation, numerics);
}

Linear::Linear(int64_t in_features, int64_t out_features, bool has_bias, Numerics numerics_) : numerics(numerics_) {
  weight = empty_param(*this, "weight", {out_features, in_features});
  if (has_bias) bias = empty_param(*this, "bias", {out_features});
}

at::Tensor Linear::forward(const at::Tensor& x, Activation activation) const {
  if (!quant.any()) return kernels::linear(x, weight, bias, activation, numerics);
  return quantized_matmul(quant, x, weight, bias, activation, numerics);
}

LayerNorm::LayerNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = empty_param(*this, "weight", {dim});
  bias = empty_param(*this, "bias", {dim});
}

at::Tensor LayerNorm::forward(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

LayerNorm2d::LayerNorm2d(int64_t channels, double eps_) : eps(eps_) {
  weight = empty_param(*this, "weight", {channels});
  bias = empty_param(*this, "bias", {channels});
}

at::Tensor LayerNorm2d::forward(const at::Tensor& x) const {
  return forward_channels_last(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
}

at::Tensor LayerNorm2d::forward_channels_last(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

Embedding::Embedding(int64_t count, int64_t dim) { weight = empty_param(*this, "weight", {count, dim}); }

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride_, int64_t padding_,
               bool has_bias)
    : stride(stride_), padding(padding_) {
  weight = empty_param(*this, "weight", {out_channels, in_channels, kernel, kernel});
  if (has_bias) bias = empty_param(*this, "bias", {out_channels});
}

at::Tensor Conv2d::forward(const at::Tensor& x) const {
  if (quant.integer || (quant.input && quant.input->grid_step().defined())) {
    // On codes, a matmul over the patches, in both backends (zero padding is exact: 0 is on
    // every grid). The patches are gathered channels-last, in im2col's column order (c, i, j):
    // transposing im2col's (C k k, L) output instead strides 16 KB per element in a ViT neck.
    const int64_t k = weight.size(-1), batch = x.size(0);
    const at::Tensor channels_last = x.permute({0, 2, 3, 1});
    if (runs_on_codes(quant)) return forward_on_codes(channels_last);
    const at::Tensor padded =
        padding > 0 ? at::constant_pad_nd(channels_last, {0, 0, padding, padding, padding, padding}) : channels_last;
    const at::Tensor windows = padded.unfold(1, k, stride).unfold(2, k, stride);  // (B, OH, OW, C, k, k)
    const int64_t out_h = windows.size(1), out_w = windows.size(2);
    const at::Tensor patches = windows.reshape({batch * out_h * out_w, -1});
    const at::Tensor y = quantized_matmul(quant, patches, weight, bias, Activation::kNone);
    return y.view({batch, out_h, out_w, -1}).permute({0, 3, 1, 2}).contiguous();
  }
  return at::conv2d(quantize_at(quant.input, x), quantize_at(quant.weight, weight), bias, {stride, stride},
                    {padding, padding});
}

ConvTranspose2d::ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride_)
    : stride(stride_) {
  weight = empty_param(*this, "weight", {in_channels, out_channels, kernel, kernel});
  bias = empty_param(*this, "bias", {out_channels});
}

at::Tensor ConvTranspose2d::forward(const at::Tensor& x) const {
  return at::conv_transpose2d(x, weight, bias, {stride, stride});
}

MLPBlock::MLPBlock(int64_t embedding_dim, int64_t mlp_dim, Activation activation_, Numerics numerics)
    : activation(activation_) {
  lin1 = register_module("lin1", std::make_shared<Linear>(embedding_dim, mlp_dim, true, numerics));
  lin2 = register_module("lin2", std::make_shared<Linear>(mlp_dim, embedding_dim, true, numerics));
}

at::Tensor MLPBlock::forward(const at::Tensor& x) const {
  return tapped(tap, {x}, lin2->forward(lin1->forward(x, activation)));
}

MLP::MLP(int64_t input_dim, int64_t hidden_dim, int64_t output_dim, int64_t num_layers, Numerics numerics,
         bool sigmoid_output_)
    : sigmoid_output(sigmoid_output_) {
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < num_layers; ++i) {
    const int64_t in = i == 0 ? input_dim : hidden_dim;
    const int64_t out = i == num_layers - 1 ? output_dim : hidden_dim;
    layers.push_back(append(list, std::make_shared<Linear>(in, out, true, numerics)));
  }
  register_module("layers", list);
}

at::Tensor MLP::forward(const at::Tensor& x) const {
  at::Tensor y = x;
  for (size_t i = 0; i < layers.size(); ++i)
    y = layers[i]->forward(y, i + 1 < layers.size() ? Activation::kRelu : Activation::kNone);
  return sigmoid_output ? at::sigmoid(y) : y;
}

}  // namespace ptq4sam::sam
