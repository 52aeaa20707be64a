#pragma once
// Integer linear layers: activations quantized per tensor to u8 codes, weights held as s8
// codes per output channel, the product u8 x s8 -> s32 in oneDNN (VNNI), then zero-point
// compensation, dequantization and bias in one output pass. The result equals the
// fake-quantized float layer, linear(dequant(Q(x)), dequant(W), bias), up to float32 rounding.
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "kernels/matmul.h"

namespace ptq4sam::kernels {

// Per-tensor affine quantization of an activation: code = clamp(round(x / scale) + zero_point,
// quant_min, quant_max), with [quant_min, quant_max] inside [-128, 255].
struct ActivationQuantization {
  float scale = 1.0f;
  int32_t zero_point = 0;
  int32_t quant_min = 0, quant_max = 255;
};

// A weight of shape (N, K) as s8 codes: asymmetric codes c in [0, 2^b) are shifted by
// 2^(b-1), their zero points with them, so that every bit width up to 8 fits an s8.
struct PackedWeightCodes;  // the codes in oneDNN's preferred blocked layout (opaque)

struct QuantizedWeight {
  at::Tensor codes;       // (K, N) int8, the transpose: oneDNN's weights operand
  std::shared_ptr<const PackedWeightCodes> packed;
  at::Tensor scale;       // (N) float32
  at::Tensor zero_point;  // (N) int32, in the shifted code space
  at::Tensor code_sums;   // (N) int32, sum over K of the shifted codes
  at::Tensor bias;        // (N) float32 or undefined
  int64_t out_features() const { return scale.numel(); }
  int64_t in_features() const { return codes.size(0); }
};

// From integer codes (N, K) in [quant_min, quant_max] of a `bits`-bit grid (symmetric: signed
// codes, zero points 0), per-channel scales and zero points. Throws if a code is off the grid.
QuantizedWeight make_quantized_weight(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero_point,
                                      int bits, bool symmetric, const at::Tensor& bias);

// act(linear) over the last dim of x (..., K) float32.
at::Tensor quantized_linear(const at::Tensor& x, const ActivationQuantization& input, const QuantizedWeight& weight,
                            Activation activation = Activation::kNone);

}  // namespace ptq4sam::kernels
