#include "quant/adaround.h"

namespace ptq4sam::quant {
namespace {

// Per output channel (axis 0), or one value for the whole tensor.
at::Tensor channel_view(const at::Tensor& t, const at::Tensor& like) {
  if (t.numel() == 1) return t.reshape({});
  std::vector<int64_t> shape(size_t(like.dim()), 1);
  shape[0] = like.size(0);
  return t.reshape(shape);
}

}  // namespace

at::Tensor adaround_init_alpha(const at::Tensor& weight, const at::Tensor& scale, const AdaRoundParams& p) {
  const at::Tensor s = channel_view(scale, weight);
  const at::Tensor x_floor = at::floor(weight / s);
  const at::Tensor rest = (weight / s) - x_floor;
  return -at::log((p.zeta - p.gamma) / (rest - p.gamma) - 1);
}

at::Tensor adaround_nearest_mask(const at::Tensor& weight, const at::Tensor& scale) {
  const at::Tensor x = weight / channel_view(scale, weight);
  return (at::round(x) > at::floor(x)).to(at::kByte);
}

at::Tensor rectified_sigmoid(const at::Tensor& alpha, const AdaRoundParams& p) {
  return at::clamp(at::sigmoid(alpha) * (p.zeta - p.gamma) + p.gamma, 0, 1);
}

at::Tensor adaround_quantize(const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& zero_point,
                             const at::Tensor& alpha, const QuantRange& range, bool hard, const AdaRoundParams& p) {
  const at::Tensor s = channel_view(scale, weight), zp = channel_view(zero_point, weight);
  const at::Tensor x_floor = at::floor(weight / s);
  const at::Tensor x_int = hard ? x_floor + (alpha >= 0).to(weight.scalar_type()) : x_floor + rectified_sigmoid(alpha, p);
  const at::Tensor x_quant = at::clamp(x_int + zp, range.quant_min(), range.quant_max());
  return (x_quant - zp) * s;
}

}  // namespace ptq4sam::quant
