#pragma once
// Fake quantization as the PTQ4SAM seed computes it (ptq4sam/quantization/util_quant.py):
// round half to even with a straight-through gradient, clamp to [quant_min, quant_max],
// dequantise. Differentiable where the seed is (scale gradients for LSQ, STE for inputs).
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include <cstdint>

namespace ptq4sam::quant {

// The integer grid of a bit width: [0, 2^b - 1], or [-2^(b-1), 2^(b-1) - 1] when symmetric.
struct QuantRange {
  int bit = 8;
  bool symmetric = false;
  int64_t quant_min() const { return symmetric ? -(int64_t(1) << (bit - 1)) : 0; }
  int64_t quant_max() const { return symmetric ? (int64_t(1) << (bit - 1)) - 1 : (int64_t(1) << bit) - 1; }
};

// round(x) in the forward pass, identity gradient.
at::Tensor round_ste(const at::Tensor& x);
// t in the forward pass, gradient scaled by `factor` (LSQ's gradient scaling).
at::Tensor grad_scale(const at::Tensor& t, double factor);

// Per tensor: scale and zero point are scalars (or 1-element tensors).
at::Tensor fake_quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                         const QuantRange& range);
// Per channel along ch_axis: scale and zero_point have x.size(ch_axis) elements.
at::Tensor fake_quantize_per_channel(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                     int64_t ch_axis, const QuantRange& range);

// AGQ's log quantizer: s * 2^(-q / tau), q = clamp(round(-tau * log2(x / s)), 0, 2^b - 1), and
// values whose code would reach 2^b set to 0 (x is clamped to >= 1e-20 first).
at::Tensor fake_log_quantize(const at::Tensor& x, double scale, const QuantRange& range, double tau);
// The same with a learnable scale (a one-element tensor): differentiable in x (straight
// through the rounding) and in the scale, as the seed's AdaptiveGranularityQuantize.
at::Tensor fake_log_quantize(const at::Tensor& x, const at::Tensor& scale, const QuantRange& range, double tau);

// The log quantizer of one (scale, tau) on raw float32 spans. For integer tau the code comes from
// the exponent and mantissa bits of x / s (round(tau * log2 m) counts the thresholds
// 2^((j + 0.5) / tau) below the mantissa m), which equals rounding the exact logarithm; other
// taus use log2.
class LogQuantTable {
 public:
  LogQuantTable(double scale, const QuantRange& range, double tau);
  void apply(const float* in, float* out, int64_t n) const;
  // The codes apply() looks up: q in [0, 2^b), or 2^b for the values it sets to 0.
  void codes(const float* in, int32_t* out, int64_t n) const;
  // The value of each code, 0 at the last (2^b + 1 entries).
  const std::vector<float>& values() const { return values_; }
  // apply() over a float32 tensor, in parallel.
  at::Tensor apply(const at::Tensor& x) const;

 private:
  int64_t code_of(float x) const;
  float scale_;
  float tau_;
  int64_t levels_;
  bool integer_tau_;
  std::vector<float> values_;  // scale * 2^(-q / tau) for each code q, then 0 past the last
  std::vector<uint32_t> mantissa_thresholds_;  // per integer tau: the mantissas of 2^((j + 0.5) / tau)
};

}  // namespace ptq4sam::quant
