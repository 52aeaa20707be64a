#pragma once
// Building blocks shared by SAM's modules (the official segment_anything/modeling/common.py and
// the torch.nn layers it uses). Parameters are registered under torch's names ("weight",
// "bias") and start empty: a checkpoint fills them, so building ViT-H costs no random init.
#include <torch/torch.h>

#include "kernels/matmul.h"
#include "sam/quant_point.h"

namespace ptq4sam::sam {

using kernels::Activation;
using kernels::Numerics;

// act(x @ weight^T + bias) through a layer's quantizers, for a Linear or a convolution's
// patches (weight (N, ...) is flattened to (N, K)). On integer codes when the integer runtime
// set them; from the codes, accumulated exactly, when both quantizers simulate (so the
// simulated model and the integer runtime agree bit for bit); else in float32 on the
// fake-quantized operands (calibration, measurement, autograd).
at::Tensor quantized_matmul(const LayerQuantPoints& quant, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, Activation activation, Numerics numerics = Numerics::kFast);

// torch.nn.Linear.
class Linear : public torch::nn::Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Numerics numerics = Numerics::kFast);
  at::Tensor forward(const at::Tensor& x, Activation activation = Activation::kNone) const;
  at::Tensor weight, bias;
  Numerics numerics;
  LayerQuantPoints quant;
};

// torch.nn.LayerNorm over the last dim.
class LayerNorm : public torch::nn::Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  double eps;
};

// SAM's LayerNorm2d: normalises an N x C x H x W tensor over C (eps 1e-6).
class LayerNorm2d : public torch::nn::Module {
 public:
  explicit LayerNorm2d(int64_t channels, double eps = 1e-6);
  at::Tensor forward(const at::Tensor& x) const;
  // The same normalisation for a channels-last (..., C) tensor.
  at::Tensor forward_channels_last(const at::Tensor& x) const;
  at::Tensor weight, bias;
  double eps;
};

// torch.nn.Embedding, used by SAM only for its weight table.
class Embedding : public torch::nn::Module {
 public:
  Embedding(int64_t count, int64_t dim);
  at::Tensor weight;
};

// torch.nn.Conv2d with square kernel, stride and padding.
class Conv2d : public torch::nn::Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding, bool bias);
  at::Tensor forward(const at::Tensor& x) const;
  // forward on integer codes, from the (B, H, W, C) view of the input: the patches are
  // unfolded from the input's codes (the same codes as the float patches would give).
  at::Tensor forward_on_codes(const at::Tensor& channels_last) const;
  at::Tensor weight, bias;
  int64_t stride, padding;
  LayerQuantPoints quant;
};

// torch.nn.ConvTranspose2d with square kernel and stride, no padding.
class ConvTranspose2d : public torch::nn::Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  int64_t stride;
};

// common.MLPBlock: lin2(act(lin1(x))).
class MLPBlock : public torch::nn::Module {
 public:
  MLPBlock(int64_t embedding_dim, int64_t mlp_dim, Activation activation, Numerics numerics = Numerics::kFast);
  at::Tensor forward(const at::Tensor& x) const;
  // Whether forward_on_codes serves: both layers on integer codes, no autograd, no tap.
  bool on_codes() const;
  // residual + forward(x) for the integer runtime, lin1's output going straight to lin2's input
  // codes (the hidden activations, 4x the width, never exist in float32); into `out` where
  // given. The simulated model's numbers bit for bit: they too take GELU from kernels/gelu.h.
  at::Tensor forward_on_codes(const at::Tensor& x, const at::Tensor& residual, at::Tensor out = at::Tensor()) const;
  std::shared_ptr<Linear> lin1, lin2;
  Activation activation;
  BlockTap tap;
};

// mask_decoder.MLP: num_layers Linears with ReLU between them.
class MLP : public torch::nn::Module {
 public:
  MLP(int64_t input_dim, int64_t hidden_dim, int64_t output_dim, int64_t num_layers, Numerics numerics,
      bool sigmoid_output = false);
  at::Tensor forward(const at::Tensor& x) const;
  std::vector<std::shared_ptr<Linear>> layers;
  bool sigmoid_output;
};

// Registers `module` in `list` (so that it is named "<list>.<index>") and returns it.
template <typename M>
std::shared_ptr<M> append(torch::nn::ModuleList& list, std::shared_ptr<M> module) {
  list->push_back(module);
  return module;
}

}  // namespace ptq4sam::sam
