#pragma once
// GELU, exact (erf) form, for the quantized encoder's MLP: the integer runtime applies it inside
// its output pass, and the simulated model's code_linear calls the same function, so the two
// backends give the next layer the same codes.
#include <ATen/ATen.h>

#include <cstdint>

namespace ptq4sam::kernels {

// x[i] = 0.5 x (1 + erf(x / sqrt(2))) in place, in PyTorch's order of operations with its
// vectorised erf (Abramowitz and Stegun 7.1.26, |error| <= 1.5e-7) on our exponential: within a
// few ulp of torch.nn.GELU(). Each element's value depends on it alone, never on n or on its
// position, so rows and whole tensors agree bit for bit.
void gelu_inplace(float* x, int64_t n);

// The same over a contiguous float32 tensor, in parallel; returns it.
at::Tensor& gelu_(at::Tensor& x);

}  // namespace ptq4sam::kernels
