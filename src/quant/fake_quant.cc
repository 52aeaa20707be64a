#include "quant/fake_quant.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu_isa.h"
#include "kernels/log_grid.h"
#include "kernels/quantize_step.h"

namespace ptq4sam::quant {

at::Tensor round_ste(const at::Tensor& x) { return (x.round() - x).detach() + x; }

at::Tensor grad_scale(const at::Tensor& t, double factor) { return (t - (t * factor)).detach() + (t * factor); }

namespace {

// fake_quantize's float32 operations in its order, one pass: q/k/v of every attention go
// through it on each forward.
static inline __attribute__((always_inline)) void fake_quantize_span_body(
    const float* in, float* out, int64_t n, float scale, float zero_point, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) out[i] = (kernels::quantize_step(in[i], scale, zero_point, lo, hi) - zero_point) * scale;
}
PTQ4SAM_DISPATCH_BY_ISA(void, fake_quantize_span, (const float* in, float* out, int64_t n, float scale, float zero_point, float lo, float hi), (in, out, n, scale, zero_point, lo, hi))

// dst[i] = table[codes[i]] for codes in [0, size), size <= 65 (log quantizers of up to 6 bits),
// with AVX-512: the table sits in four registers and two two-register permutes look 16 codes
// up at once, where element by element the lookups cost as much as computing the codes.
__attribute__((target("avx512f"))) void lookup_in_registers(const float* table, int64_t size,
                                                            const int32_t* codes, float* dst, int64_t n) {
  alignas(64) float padded[64] = {};
  std::copy(table, table + std::min<int64_t>(size, 64), padded);
  const __m512 r0 = _mm512_load_ps(padded), r1 = _mm512_load_ps(padded + 16);
  const __m512 r2 = _mm512_load_ps(padded + 32), r3 = _mm512_load_ps(padded + 48);
  const __m512 past_64 = _mm512_set1_ps(size > 64 ? table[64] : 0.0f);
  const __m512i bit_5 = _mm512_set1_epi32(32), sixty_four = _mm512_set1_epi32(64);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i code = _mm512_loadu_si512(codes + i);
    const __m512 below_32 = _mm512_permutex2var_ps(r0, code, r1);  // codes' low 5 bits
    const __m512 from_32 = _mm512_permutex2var_ps(r2, code, r3);
    const __m512 below_64 = _mm512_mask_blend_ps(_mm512_test_epi32_mask(code, bit_5), below_32, from_32);
    _mm512_storeu_ps(dst + i, _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(code, sixty_four), below_64, past_64));
  }
  for (; i < n; ++i) dst[i] = table[codes[i]];
}

bool needs_grad(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

}  // namespace

at::Tensor fake_quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                         const QuantRange& range) {
  if (x.scalar_type() == at::kFloat && x.is_cpu() && scale.numel() == 1 && zero_point.numel() == 1 && !needs_grad(x) &&
      !needs_grad(scale) && !needs_grad(zero_point)) {
    const at::Tensor input = x.contiguous();
    at::Tensor out = at::empty_like(input);
    const float s = scale.item<float>(), z = zero_point.item<float>();
    const float lo = float(range.quant_min()), hi = float(range.quant_max());
    const float* in = input.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, input.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      fake_quantize_span(in + begin, dst + begin, end - begin, s, z, lo, hi);
    });
    return out;
  }
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

// The seed's ops, differentiable (round_ste): for reconstruction. Scale: a double or a tensor.
template <typename Scale>
at::Tensor fake_log_quantize_autograd(const at::Tensor& x, const Scale& scale, int64_t levels, double tau) {
  const at::Tensor clamped = at::clamp_min(x, 1e-20);
  const at::Tensor x_int = round_ste(-1 * (clamped / scale).log2() * tau);
  const at::Tensor beyond = x_int >= double(levels);
  const at::Tensor x_q = at::clamp(x_int, 0, levels - 1);
  at::Tensor out = scale * at::pow(2.0, -1 * x_q / tau);
  return out.masked_fill(beyond, 0.0);
}

// Codes of integer tau from the bits of max(x, 1e-20) / s, lane-wise (built for each vector
// width; the loader picks the widest the CPU has). True when some ratio was zero, subnormal or
// not finite: those codes are wrong and must be redone.
static inline __attribute__((always_inline)) bool log_codes_body(const float* in, int32_t* codes,
                                                                           int64_t n, float scale,
                                                                           const uint32_t* thresholds, int32_t tau,
                                                                           int32_t top) {
  int32_t any_special = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float ratio = std::max(in[i], 1e-20f) / scale;
    uint32_t bits;
    std::memcpy(&bits, &ratio, sizeof bits);
    const int32_t exponent_field = int32_t(bits >> 23) & 0xff;
    const uint32_t mantissa = bits & 0x7fffffu;
    const int32_t above = int32_t(mantissa >= thresholds[0]) + int32_t(mantissa >= thresholds[1]) +
                          int32_t(mantissa >= thresholds[2]) + int32_t(mantissa >= thresholds[3]);
    codes[i] = std::min(std::max(tau * (127 - exponent_field) - above, 0), top);
    any_special |= int32_t(exponent_field == 0) | int32_t(exponent_field == 0xff);
  }
  return any_special != 0;
}
PTQ4SAM_DISPATCH_BY_ISA(bool, log_codes, (const float* in, int32_t* codes, int64_t n, float scale, const uint32_t* thresholds, int32_t tau, int32_t top), (in, codes, n, scale, thresholds, tau, top))

}  // namespace

LogQuantTable::LogQuantTable(double scale, const QuantRange& range, double tau)
    : scale_(float(scale)),
      tau_(float(tau)),
      levels_(range.quant_max() - range.quant_min() + 1),
      integer_tau_(tau >= 1.0 && tau <= 64.0 && std::floor(tau) == tau) {
  // The levels by the seed's own expression, scale * 2 ** (-q / tau).
  const at::Tensor values = scale * at::pow(2.0, -1 * at::arange(levels_, at::kFloat) / tau);
  values_.assign(values.data_ptr<float>(), values.data_ptr<float>() + levels_);
  values_.push_back(0.0f);  // codes at or past 2^b
  if (integer_tau_) mantissa_thresholds_ = kernels::log_mantissa_thresholds(int(tau));
}

int64_t LogQuantTable::code_of(float x) const {
  const float ratio = std::max(x, 1e-20f) / scale_;
  uint32_t bits = 0;
  std::memcpy(&bits, &ratio, sizeof bits);
  const int exponent_field = int(bits >> 23) & 0xff;
  if (!integer_tau_ || exponent_field == 0 || exponent_field == 0xff) {
    const float code = std::nearbyint((-1.0f * std::log2(ratio)) * tau_);
    return std::isnan(code) ? levels_ : int64_t(std::max(code, -1.0f));
  }
  const uint32_t mantissa = bits & 0x7fffffu;
  int64_t above = 0;
  for (const uint32_t t : mantissa_thresholds_) above += mantissa >= t;
  return -int64_t(tau_) * (exponent_field - 127) - above;
}

void LogQuantTable::codes(const float* in, int32_t* out, int64_t n) const {
  const auto clamped = [&](int64_t code) { return int32_t(std::min(std::max<int64_t>(code, 0), levels_)); };
  if (!integer_tau_) {
    for (int64_t i = 0; i < n; ++i) out[i] = clamped(code_of(in[i]));
    return;
  }
  uint32_t thresholds[4];
  for (size_t j = 0; j < 4; ++j) thresholds[j] = j < mantissa_thresholds_.size() ? mantissa_thresholds_[j] : 0x800000u;
  if (!log_codes(in, out, n, scale_, thresholds, int32_t(tau_), int32_t(levels_))) return;
  for (int64_t i = 0; i < n; ++i) {
    const float ratio = std::max(in[i], 1e-20f) / scale_;
    uint32_t bits;
    std::memcpy(&bits, &ratio, sizeof bits);
    const int32_t exponent_field = int32_t(bits >> 23) & 0xff;
    if (exponent_field == 0 || exponent_field == 0xff) out[i] = clamped(code_of(in[i]));
  }
}

void LogQuantTable::apply(const float* in, float* out, int64_t n) const {
  constexpr int64_t kBlock = 1024;
  int32_t block_codes[kBlock];
  const bool in_registers = kernels::cpu_has(kernels::CpuIsa::kAvx512) && values_.size() <= 65;
  const float* table = values_.data();
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t count = std::min(kBlock, n - start);
    codes(in + start, block_codes, count);
    float* dst = out + start;
    if (in_registers) {
      lookup_in_registers(table, int64_t(values_.size()), block_codes, dst, count);
    } else {
      for (int64_t i = 0; i < count; ++i) dst[i] = table[block_codes[i]];
    }
  }
}

at::Tensor fake_log_quantize(const at::Tensor& x, double scale, const QuantRange& range, double tau) {
  const int64_t levels = range.quant_max() - range.quant_min() + 1;
  if ((at::GradMode::is_enabled() && x.requires_grad()) || x.scalar_type() != at::kFloat || !x.is_cpu())
    return fake_log_quantize_autograd(x, scale, levels, tau);
  // AGQ's search runs this dozens of times on every attention map: one pass, no temporaries.
  return LogQuantTable(scale, range, tau).apply(x);
}

namespace {

// The log quantizer with a learnable scale, for float32: the forward is the table's (the seed's
// values, one pass), the backward one pass of the seed's gradients. Through the
// straight-through rounding, d out / d x = out / x on the levels; it is zero where the code was
// clamped to level 0, set to zero past the last level, or x < 1e-20 was clamped. d out / d s is
// 1 where the code was clamped to level 0; on the levels its two paths (the factor s and the
// code through log2(x / s)) cancel exactly.
class LearnableLogQuantize : public torch::autograd::Function<LearnableLogQuantize> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            int64_t bit, double tau) {
    const double s = scale.item<double>();
    const at::Tensor out = LogQuantTable(s, {int(bit), false}, tau).apply(x);
    ctx->save_for_backward({x, out, scale});
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["levels"] = int64_t(1) << bit;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &out = saved[1], &scale = saved[2];
    const double tau = ctx->saved_data["tau"].toDouble();
    const int64_t levels = ctx->saved_data["levels"].toInt();
    const at::Tensor& g = grads[0];
    const at::Tensor code = at::round(-1 * (at::clamp_min(x, 1e-20) / scale.item<double>()).log2() * tau);
    const at::Tensor on_levels = (code >= 0) & (code < double(levels)) & (x >= 1e-20);
    const at::Tensor grad_x = at::where(on_levels, g * out / x, at::zeros({}, g.options()));
    const at::Tensor grad_scale = (g * (code < 0)).sum().reshape(scale.sizes());
    return {grad_x, grad_scale, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor fake_log_quantize(const at::Tensor& x, const at::Tensor& scale, const QuantRange& range, double tau) {
  if (x.scalar_type() == at::kFloat && x.is_cpu() && scale.scalar_type() == at::kFloat && !range.symmetric)
    return LearnableLogQuantize::apply(x.contiguous(), scale, int64_t(range.bit), tau);
  return fake_log_quantize_autograd(x, scale.reshape({}), range.quant_max() - range.quant_min() + 1, tau);
}

at::Tensor LogQuantTable::apply(const at::Tensor& x) const {
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input);
  const float* in = input.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, input.numel(), 1 << 16,
                   [&](int64_t begin, int64_t end) { apply(in + begin, dst + begin, end - begin); });
  return out;
}

}  // namespace ptq4sam::quant
