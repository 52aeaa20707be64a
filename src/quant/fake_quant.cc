#include "quant/fake_quant.h"

namespace ptq4sam::quant {

at::Tensor round_ste(const at::Tensor& x) { return (x.round() - x).detach() + x; }

at::Tensor grad_scale(const at::Tensor& t, double factor) { return (t - (t * factor)).detach() + (t * factor); }

at::Tensor fake_quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                         const QuantRange& range) {
  const at::Tensor x_int = round_ste(x / scale) + zero_point;
  const at::Tensor x_quant = at::clamp(x_int, range.quant_min(), range.quant_max());
  return (x_quant - zero_point) * scale;
}

at::Tensor fake_quantize_per_channel(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                     int64_t ch_axis, const QuantRange& range) {
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape[size_t(ch_axis)] = x.size(ch_axis);
  return fake_quantize(x, scale.reshape(shape), zero_point.reshape(shape), range);
}

at::Tensor fake_log_quantize(const at::Tensor& x, double scale, const QuantRange& range, double tau) {
  const int64_t levels = range.quant_max() - range.quant_min() + 1;
  const at::Tensor clamped = at::clamp_min(x, 1e-20);
  const at::Tensor x_int = round_ste(-1 * (clamped / scale).log2() * tau);
  const at::Tensor beyond = x_int >= double(levels);
  const at::Tensor x_q = at::clamp(x_int, 0, levels - 1);
  at::Tensor out = scale * at::pow(2.0, -1 * x_q / tau);
  return out.masked_fill(beyond, 0.0);
}

}  // namespace ptq4sam::quant
