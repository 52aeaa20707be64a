#pragma once
// Dense float32 matrix products for inference. oneDNN runs them when no gradient is needed;
// when autograd must see the op (a tensor requires grad and grad mode is on), ATen runs it.
#include <ATen/ATen.h>

namespace ptq4sam::kernels {

enum class Activation { kNone, kGelu, kRelu };

// kFast runs oneDNN. kReference runs ATen's addmm (BLAS), the op sequence of PyTorch itself:
// SAM's mask decoder amplifies float32 rounding so strongly (attention scores ~1e4 with some
// weights) that only the same summation order reproduces the official numbers; it is cheap
// there, while the image encoder, where the time goes, is well conditioned.
enum class Numerics { kFast, kReference };

// y = act(x @ weight^T + bias) over the last dim of x, as torch.nn.functional.linear. x is
// (..., K) float32 with a unit stride on its last dim; weight is (N, K); bias is (N) or undefined.
// GELU is the exact (erf) form, as torch.nn.GELU().
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  Activation activation = Activation::kNone, Numerics numerics = Numerics::kFast);

// out = alpha * a @ b for 2-D float32 a (M x K) and b (K x N) of any strides, written into the
// (possibly strided) view `out` (M x N).
void matmul_into(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, float alpha = 1.0f);

// True when autograd would need to record an op on these tensors.
bool needs_autograd(const at::Tensor& a, const at::Tensor& b);

}  // namespace ptq4sam::kernels
