#pragma once
// Where a quantizer may sit in the model. The sam layer only knows this interface: a point is
// the identity until the quant layer attaches something to it (quant/quantized_sam.h), so the
// FP32 model keeps its fast path and the official module structure.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <vector>

#include "kernels/attention.h"
#include "kernels/quantized_attention.h"
#include "kernels/quantized_linear.h"

namespace ptq4sam::sam {

class QuantPoint {
 public:
  virtual ~QuantPoint() = default;
  // x as the quantizer leaves it (observed, fake-quantized, or untouched). `value` is the
  // attention's V when x is a softmax output (AGQ measures its error through V).
  virtual at::Tensor apply(const at::Tensor& x, const at::Tensor& value) = 0;
  // Whether apply() must see a whole tensor at once (an observer at work), not chunks of it.
  virtual bool needs_whole_tensor() const = 0;
  // Whether apply() acts on each element alone, ignoring `value`, so that any slice of a
  // tensor may be passed through it on its own.
  virtual bool elementwise() const = 0;
  // When apply() returns exactly (code - zero_point) * step on an affine grid: the step, one
  // element per tensor or one per channel along dim 0. Undefined otherwise.
  virtual at::Tensor grid_step() const = 0;
  // Whether apply() keeps no state and draws no random numbers, so that several threads may
  // call it at once (on different tensors) with the result of calling it in turn.
  virtual bool stateless() const = 0;
};

using QuantPointPtr = std::shared_ptr<QuantPoint>;

inline at::Tensor quantize_at(const QuantPointPtr& point, const at::Tensor& x, const at::Tensor& value = {}) {
  return point ? point->apply(x, value) : x;
}

// The attention kernel's hook for a softmax quantizer (none when there is none).
inline kernels::ProbabilityHook softmax_hook(const QuantPointPtr& point) {
  if (!point) return {};
  return {[point](const at::Tensor& probs, const at::Tensor& values) { return point->apply(probs, values); },
          point->elementwise(), point->stateless()};
}

// The quantizers of a Linear or Conv2d: its input and its weight. `integer`, set by the integer
// runtime, replaces both: the layer then runs on integer codes (kernels/quantized_linear.h).
struct LayerQuantPoints {
  QuantPointPtr input, weight;
  std::shared_ptr<const kernels::IntegerLinear> integer;
  bool any() const { return input || weight || integer; }
  bool needs_whole_tensor() const {
    return (input && input->needs_whole_tensor()) || (weight && weight->needs_whole_tensor());
  }
};

// The quantizers of an attention: q, k and v after their projections, and the softmax output.
// `integer`, set by the integer runtime on the image encoder's attentions, runs them on codes
// (kernels/quantized_attention.h); q's quantizer still gives the relative positions' queries.
struct AttentionQuantPoints {
  QuantPointPtr q, k, v, softmax;
  std::shared_ptr<const kernels::IntegerAttention> integer;
  bool any() const { return q || k || v || softmax || integer; }
};

// Whether a layer or an attention runs on integer codes now: the integer runtime set its kernel
// and no gradient is being recorded (reconstruction trains through the float path). The bodies
// of these paths are in sam/code_paths.cc.
inline bool runs_on_codes(const LayerQuantPoints& quant) { return quant.integer && !at::GradMode::is_enabled(); }
inline bool runs_on_codes(const AttentionQuantPoints& quant) { return quant.integer && !at::GradMode::is_enabled(); }

// Reconstruction's probe on a block (quant/reconstruct.h): called with the block's inputs and
// its output each time the block runs. It may throw StopForward to end the model's forward
// there (the rest of the model is not needed once a block's data is caught).
using BlockTap = std::function<void(const std::vector<at::Tensor>& inputs, const at::Tensor& output)>;
struct StopForward {};

inline at::Tensor tapped(const BlockTap& tap, std::vector<at::Tensor> inputs, at::Tensor output) {
  if (tap) tap(inputs, output);
  return output;
}

}  // namespace ptq4sam::sam
