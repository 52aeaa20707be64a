#pragma once
// Integer linear layers: activations quantized per tensor to u8 codes, weights held as s8
// codes per output channel, the product u8 x s8 -> s32 in oneDNN (VNNI), then zero-point
// compensation, dequantization and bias in one output pass. The result equals the
// fake-quantized float layer, linear(dequant(Q(x)), dequant(W), bias), up to float32 rounding.
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

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
  // The codes, (K, N) in oneDNN's blocked layout: one s8 per code, or for bit widths <= 4 two
  // per byte, unpacked on use into a per-thread cache of the last two layers' codes (an int4
  // model stays int4 in memory).
  std::shared_ptr<const PackedWeightCodes> packed;
  int64_t in_features = 0;
  at::Tensor scale;       // (N) float32
  at::Tensor zero_point;  // (N) int32, in the shifted code space
  at::Tensor code_sums;   // (N) int32, sum over K of the shifted codes
  at::Tensor bias;        // (N) float32 or undefined
  int64_t out_features() const { return scale.numel(); }
  // Bytes held: codes, scales, zero points, sums and bias.
  int64_t resident_bytes() const;
};

// From integer codes (N, K) in [quant_min, quant_max] of a `bits`-bit grid (symmetric: signed
// codes, zero points 0), per-channel scales and zero points. Throws if a code is off the grid.
QuantizedWeight make_quantized_weight(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero_point,
                                      int bits, bool symmetric, const at::Tensor& bias);

// A Linear (or a convolution as a matmul over patches) on integer codes: its input quantizer
// and its quantized weight.
struct IntegerLinear {
  ActivationQuantization input;
  QuantizedWeight weight;
};

// An activation as a linear's input: its codes under the layer's input quantizer, moved into u8
// (int_matmul's u8_shift), row by row, with each row's sum. One layer can hand its output to the
// next this way, with no float32 tensor in between.
struct ActivationCodes {
  at::Tensor codes;  // (rows, K) uint8, contiguous
  std::vector<int32_t> row_sums;
  ActivationQuantization quant;
  int32_t shift = 0;
  int64_t rows() const { return codes.size(0); }
};

// The codes of x (..., K) float32 under q, one row per leading index: the fake quantizer's codes
// bit for bit.
ActivationCodes quantize_activations(const at::Tensor& x, const ActivationQuantization& q);

// act(linear) of the codes, (rows, N) float32, plus `residual` (rows, N) where given, added last
// (as x + layer(x)). Written into `out` (rows, N, contiguous) where given, else a new tensor.
at::Tensor quantized_linear(const ActivationCodes& a, const QuantizedWeight& weight,
                            Activation activation = Activation::kNone, const at::Tensor& residual = at::Tensor(),
                            at::Tensor out = at::Tensor());

// act(linear) of the codes, quantized at once by the next layer's input quantizer: what
// quantize_activations(quantized_linear(a, weight, activation), next) gives, bit for bit, without
// the float32 tensor (an MLP's hidden activations, 4x its width).
ActivationCodes quantized_linear_codes(const ActivationCodes& a, const QuantizedWeight& weight, Activation activation,
                                       const ActivationQuantization& next);

// A block of output columns and how they become bytes: code under `quant`, plus `shift`.
struct CodeBlock {
  ActivationQuantization quant;
  int32_t shift = 0;
};

// act(linear) of the codes as bytes, (rows, N) uint8: the N columns cut into blocks.size() equal
// blocks, block b quantized by blocks[b] (the fused q | k | v projection into the attention's
// three quantizers). Each byte is the fake quantizer's code of quantized_linear's output, plus
// the block's shift, bit for bit. Throws Error when N does not split or a grid does not fit.
at::Tensor quantized_linear_block_codes(const ActivationCodes& a, const QuantizedWeight& weight, Activation activation,
                                        const std::vector<CodeBlock>& blocks);

// act(linear) over the last dim of x (..., K) float32.
at::Tensor quantized_linear(const at::Tensor& x, const ActivationQuantization& input, const QuantizedWeight& weight,
                            Activation activation = Activation::kNone);
inline at::Tensor quantized_linear(const at::Tensor& x, const IntegerLinear& layer,
                                   Activation activation = Activation::kNone) {
  return quantized_linear(x, layer.input, layer.weight, activation);
}

// The same numbers from fake-quantized operands: act(float(acc) * scale + bias) with acc =
// a_codes @ w_codes^T summed exactly, where a_codes (..., K) and w_codes (N, K) are float32
// tensors of integer values (code - zero point, |value| <= 255) and scale (N) is the input's
// scale times each weight channel's, in float32. Float32 products over K-slices of 256 are
// exact (every partial sum stays below 2^24), so any GEMM serves; the epilogue is
// quantized_linear's, operation for operation, so the two agree bit for bit.
at::Tensor code_linear(const at::Tensor& a_codes, const at::Tensor& w_codes, const at::Tensor& scale,
                       const at::Tensor& bias, Activation activation = Activation::kNone);

// Whether oneDNN's u8 x s8 product is exact on this CPU. Without VNNI (AVX512-VNNI or
// AVX-VNNI) it pairs products in saturating 16-bit sums, which 8-bit codes can overflow.
bool integer_matmul_exact();

}  // namespace ptq4sam::kernels
