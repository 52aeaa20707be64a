#include "sam/common.h"

#include <ATen/Parallel.h>

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
    if (quant.integer && !at::GradMode::is_enabled()) return forward_on_codes(channels_last);
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

namespace {

// The (B * OH * OW, C * k * k) patches of a (B, H, W, C) grid of codes, im2col's column order
// (c, i, j) as grid.unfold(1, k, stride).unfold(2, k, stride).reshape(...) gives them, and each
// patch's sum. By hand: each pixel's C contiguous codes scattered with stride k * k (the
// generic 6-d byte copy took ~9 ms for a ViT neck's 3 x 3 convolution), and at::sum with an
// int32 result would first copy every byte into int32.
kernels::ActivationCodes unfold_codes(const at::Tensor& grid, int64_t k, int64_t stride, int64_t out_h,
                                      int64_t out_w) {
  const int64_t batch = grid.size(0), h = grid.size(1), w = grid.size(2), c = grid.size(3), width = c * k * k;
  kernels::ActivationCodes patches;
  patches.codes = at::empty({batch * out_h * out_w, width}, at::kByte);
  patches.row_sums.resize(size_t(batch * out_h * out_w));
  const uint8_t* src = grid.data_ptr<uint8_t>();
  uint8_t* dst = patches.codes.data_ptr<uint8_t>();
  at::parallel_for(0, batch * out_h * out_w, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (out_h * out_w), oy = r / out_w % out_h, ox = r % out_w;
      uint8_t* row = dst + r * width;
      int32_t sum = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const uint8_t* pixel = src + ((b * h + oy * stride + i) * w + ox * stride + j) * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            row[ch * k * k + i * k + j] = pixel[ch];
            sum += pixel[ch];
          }
        }
      patches.row_sums[size_t(r)] = sum;
    }
  });
  return patches;
}

}  // namespace

at::Tensor Conv2d::forward_on_codes(const at::Tensor& channels_last) const {
  // The input's codes, padded with the code of 0 (what conv2d's zero padding quantizes to), are
  // unfolded as bytes: a quarter of the float32 patches' memory, quantized once per pixel
  // instead of once per patch that holds it.
  const kernels::IntegerLinear& layer = *quant.integer;
  const int64_t batch = channels_last.size(0), h = channels_last.size(1), w = channels_last.size(2),
                c = channels_last.size(3), k = weight.size(-1);
  const kernels::ActivationCodes pixels = kernels::quantize_activations(channels_last, layer.input);
  at::Tensor grid = pixels.codes.view({batch, h, w, c});
  if (padding > 0) {
    const int64_t zero = kernels::quantize_activations(at::zeros({1, 1}), layer.input).codes.item<int64_t>();
    grid = at::constant_pad_nd(grid, {0, 0, padding, padding, padding, padding}, double(zero));
  }
  const int64_t out_h = (grid.size(1) - k) / stride + 1, out_w = (grid.size(2) - k) / stride + 1;
  kernels::ActivationCodes patches = unfold_codes(grid.contiguous(), k, stride, out_h, out_w);
  patches.quant = layer.input;
  patches.shift = pixels.shift;
  const at::Tensor y = kernels::quantized_linear(patches, layer.weight);
  return y.view({batch, out_h, out_w, -1}).permute({0, 3, 1, 2}).contiguous();
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

bool MLPBlock::on_codes() const {
  return lin1->quant.integer && lin2->quant.integer && !tap && !at::GradMode::is_enabled();
}

at::Tensor MLPBlock::forward_on_codes(const at::Tensor& x, const at::Tensor& residual, at::Tensor out) const {
  const kernels::IntegerLinear &first = *lin1->quant.integer, &second = *lin2->quant.integer;
  const kernels::ActivationCodes hidden =
      kernels::quantized_linear_codes(kernels::quantize_activations(x, first.input), first.weight, activation, second.input);
  return kernels::quantized_linear(hidden, second.weight, Activation::kNone, residual, out);
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
