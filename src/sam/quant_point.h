#pragma once
// Where a quantizer may sit in the model. The sam layer only knows this interface: a point is
// the identity until the quant layer attaches something to it (quant/quantized_sam.h), so the
// FP32 model keeps its fast path and the official module structure.
#include <ATen/ATen.h>

#include <memory>

#include "kernels/attention.h"

namespace ptq4sam::sam {

class QuantPoint {
 public:
  virtual ~QuantPoint() = default;
  // x as the quantizer leaves it (observed, fake-quantized, or untouched). `value` is the
  // attention's V when x is a softmax output (AGQ measures its error through V).
  virtual at::Tensor apply(const at::Tensor& x, const at::Tensor& value) = 0;
  // Whether apply() must see a whole tensor at once (an observer at work), not chunks of it.
  virtual bool needs_whole_tensor() const = 0;
};

using QuantPointPtr = std::shared_ptr<QuantPoint>;

inline at::Tensor quantize_at(const QuantPointPtr& point, const at::Tensor& x, const at::Tensor& value = {}) {
  return point ? point->apply(x, value) : x;
}

// The attention kernel's hook for a softmax quantizer (none when there is none).
inline kernels::ProbabilityHook softmax_hook(const QuantPointPtr& point) {
  if (!point) return nullptr;
  return [point](const at::Tensor& probs, const at::Tensor& values) { return point->apply(probs, values); };
}

// The quantizers of a Linear or Conv2d: its input and its weight.
struct LayerQuantPoints {
  QuantPointPtr input, weight;
  bool any() const { return input || weight; }
  bool needs_whole_tensor() const {
    return (input && input->needs_whole_tensor()) || (weight && weight->needs_whole_tensor());
  }
};

// The quantizers of an attention: q, k and v after their projections, and the softmax output.
struct AttentionQuantPoints {
  QuantPointPtr q, k, v, softmax;
  bool any() const { return q || k || v || softmax; }
};

}  // namespace ptq4sam::sam
