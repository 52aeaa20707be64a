#include "quant/fake_quant.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

namespace {

// The seed's ops, differentiable (round_ste): for reconstruction.
at::Tensor fake_log_quantize_autograd(const at::Tensor& x, double scale, int64_t levels, double tau) {
  const at::Tensor clamped = at::clamp_min(x, 1e-20);
  const at::Tensor x_int = round_ste(-1 * (clamped / scale).log2() * tau);
  const at::Tensor beyond = x_int >= double(levels);
  const at::Tensor x_q = at::clamp(x_int, 0, levels - 1);
  at::Tensor out = scale * at::pow(2.0, -1 * x_q / tau);
  return out.masked_fill(beyond, 0.0);
}

}  // namespace

at::Tensor fake_log_quantize(const at::Tensor& x, double scale, const QuantRange& range, double tau) {
  const int64_t levels = range.quant_max() - range.quant_min() + 1;
  if ((at::GradMode::is_enabled() && x.requires_grad()) || x.scalar_type() != at::kFloat)
    return fake_log_quantize_autograd(x, scale, levels, tau);
  // The same float32 operations in one pass per chunk (AGQ's search runs this dozens of times
  // on every attention matrix): log2(x / s) by ATen, then code, clamp and a table of the
  // levels, the table computed by the seed's own expression scale * 2 ** (-q / tau).
  const at::Tensor table_t = scale * at::pow(2.0, -1 * at::arange(levels, at::kFloat) / tau);
  const std::vector<float> table(table_t.data_ptr<float>(), table_t.data_ptr<float>() + levels);
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input);
  const float* in = input.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float tau_f = float(tau), top = float(levels);
  constexpr int64_t kChunk = 1 << 16;
  at::parallel_for(0, input.numel(), kChunk, [&](int64_t begin, int64_t end) {
    for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
      const int64_t n = std::min(kChunk, end - c0);
      const at::Tensor logs = at::log2(at::clamp_min(input.view({-1}).narrow(0, c0, n), 1e-20).div_(scale));
      const float* l = logs.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i) {
        const float code = std::nearbyint((-1.0f * l[i]) * tau_f);
        dst[c0 + i] = code >= top ? 0.0f : table[size_t(std::min(std::max(code, 0.0f), top - 1.0f))];
      }
    }
  });
  return out;
}

}  // namespace ptq4sam::quant
