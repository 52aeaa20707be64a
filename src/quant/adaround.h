#pragma once
// AdaRound's learnable rounding of weights (as in the seed's AdaRoundFakeQuantize): each
// weight rounds down plus a rectified sigmoid h(alpha) in [0, 1], alpha initialised so that
// h(alpha) equals the weight's fractional part.
#include <ATen/ATen.h>

#include "quant/fake_quant.h"

namespace ptq4sam::quant {

struct AdaRoundParams {
  double gamma = -0.1, zeta = 1.1;
};

// alpha = -log((zeta - gamma) / (rest - gamma) - 1), rest = w / scale - floor(w / scale).
// scale and zero_point are per output channel (axis 0), or single values.
at::Tensor adaround_init_alpha(const at::Tensor& weight, const at::Tensor& scale, const AdaRoundParams& p = {});
// Where round-to-nearest (half to even, as torch.round) of weight / scale rounds up: as a hard
// rounding mask (set_adaround_mask) it gives the calibrated quantizer's codes back.
at::Tensor adaround_nearest_mask(const at::Tensor& weight, const at::Tensor& scale);
// clamp(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1).
at::Tensor rectified_sigmoid(const at::Tensor& alpha, const AdaRoundParams& p = {});
// The weight with soft rounding (floor + h(alpha)) or hard rounding (floor + [alpha >= 0]).
at::Tensor adaround_quantize(const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& zero_point,
                             const at::Tensor& alpha, const QuantRange& range, bool hard,
                             const AdaRoundParams& p = {});

}  // namespace ptq4sam::quant
