#pragma once
// Float32 2-D convolution for inference on oneDNN, on channels-last (NHWC) activations.
#include <ATen/ATen.h>

#include <memory>

namespace ptq4sam::kernels {

enum class ConvActivation { kNone, kSilu, kRelu };

// A convolution prepared once: its weights are reordered to the layout oneDNN's kernel for this
// machine prefers (once per layout, not per call), bias and activation are fused into the
// product. SiLU is x * sigmoid(x), as mmdetection's Swish and torch.nn.SiLU. Zero padding on
// all sides, square kernel, equal strides. Thread-safe to call; primitives are cached per input
// size. A residual, where given, is added before the activation (ResNet's
// relu(bn3(conv3(x)) + identity)) inside the same primitive.
class Conv2d {
 public:
  // weight (O, I, k, k) float32, bias (O) float32 or undefined.
  Conv2d(const at::Tensor& weight, const at::Tensor& bias, int64_t stride, int64_t padding,
         ConvActivation activation = ConvActivation::kNone);

  // x: (N, I, H, W) float32 (any memory format; channels-last avoids a copy). Returns
  // (N, O, H', W') in channels-last memory format.
  at::Tensor forward(const at::Tensor& x) const;
  // act(conv(x) + residual); residual has the output's shape.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual) const;

  int64_t in_channels() const;
  int64_t out_channels() const;
  int64_t kernel_size() const;
  // Multiply-adds of one forward on an H x W input (for benchmarks).
  double macs(int64_t height, int64_t width) const;

 private:
  at::Tensor run(const at::Tensor& x, const at::Tensor& residual) const;

  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace ptq4sam::kernels
