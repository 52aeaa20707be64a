#include "quant/quantizer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "quant/adaround.h"
#include "util/error.h"

namespace ptq4sam::quant {

at::Tensor Quantizer::apply(const at::Tensor& x, const at::Tensor& value) {
  if (capture_) {
    captured_ = x.detach().clone();
    capture_ = false;
  }
  switch (mode_) {
    case QuantMode::kOff:
      return x;
    case QuantMode::kCalibrate:
      observe(x.detach(), value.defined() ? value.detach() : value);
      return x;
    case QuantMode::kSimulate: {
      const at::Tensor quantized = fake_quantize(x);
      if (drop_prob_ >= 1.0) return quantized;
      return at::where(at::rand_like(quantized) < drop_prob_, quantized, x);
    }
    case QuantMode::kMeasure: {
      const at::Tensor xd = x.detach();
      energies_.add(xd, fake_quantize(xd));
      return x;
    }
  }
  return x;
}

void Quantizer::set_mode(QuantMode mode) {
  if (mode_ == QuantMode::kCalibrate && mode != QuantMode::kCalibrate) settle();
  if ((mode == QuantMode::kSimulate || mode == QuantMode::kMeasure) && !ready())
    throw Error(name_, "is not calibrated (no quantization parameters)");
  mode_ = mode;
}

bool Quantizer::is_weight() const {
  const std::string suffix = "weight_fake_quant";
  return name_.size() >= suffix.size() && name_.compare(name_.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string Quantizer::weight_key() const {
  return is_weight() ? name_.substr(0, name_.size() - std::string("_fake_quant").size()) : std::string();
}

at::Tensor Quantizer::take_captured() {
  at::Tensor t = std::move(captured_);
  captured_ = at::Tensor();
  return t;
}

double sqnr_db_of(double signal, double noise) {
  return noise <= 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise);
}

void Energies::add(const at::Tensor& reference_in, const at::Tensor& approx_in) {
  if (reference_in.scalar_type() != at::kFloat || approx_in.scalar_type() != at::kFloat || !reference_in.is_cpu()) {
    const at::Tensor ref = reference_in.to(at::kDouble);
    signal += ref.pow(2).sum().item<double>();
    noise += (approx_in.to(at::kDouble) - ref).pow(2).sum().item<double>();
    return;
  }
  const at::Tensor reference = reference_in.contiguous(), approx = approx_in.expand_as(reference_in).contiguous();
  const float* r = reference.data_ptr<float>();
  const float* a = approx.data_ptr<float>();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = reference.numel(), chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> signals(size_t(chunks), 0.0), noises(size_t(chunks), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double s = 0, e = 0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const double ref = r[i], diff = double(a[i]) - ref;
        s += ref * ref;
        e += diff * diff;
      }
      signals[size_t(c)] = s;
      noises[size_t(c)] = e;
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    signal += signals[size_t(c)];
    noise += noises[size_t(c)];
  }
}

double Quantizer::sqnr_db() const { return energies_.sqnr_db(); }

AffineQuantizer::AffineQuantizer(std::string name, QuantRange range, int64_t ch_axis, std::unique_ptr<Observer> observer,
                                 bool clamp_scale)
    : Quantizer(std::move(name), range), ch_axis_(ch_axis), observer_(std::move(observer)), clamp_scale_(clamp_scale) {}

void AffineQuantizer::observe(const at::Tensor& x, const at::Tensor&) { observer_->observe(x); }

void AffineQuantizer::settle() {
  if (!observer_->min_val().defined()) return;  // saw nothing
  const auto [scale, zero_point] = observer_->qparams();
  set_params(scale.to(at::kFloat).reshape({-1}), zero_point.to(at::kInt).reshape({-1}));
}

void AffineQuantizer::set_params(const at::Tensor& scale, const at::Tensor& zero_point) {
  scale_ = scale.to(at::kFloat).reshape({-1}).contiguous();
  // LSQ's forward keeps |scale| >= float32 epsilon once observers are off.
  if (clamp_scale_) scale_ = scale_.abs().clamp_min(std::numeric_limits<float>::epsilon());
  zero_point_ = zero_point.to(at::kInt).reshape({-1}).contiguous();
}

at::Tensor AffineQuantizer::grid_step() const {
  // Soft rounding, dropping and a scale in training leave values off the grid.
  const bool on_grid = mode() == QuantMode::kSimulate && !(alpha_.defined() && adaround_soft_) &&
                       drop_prob() >= 1.0 && !scale_.requires_grad();
  return on_grid ? scale_ : at::Tensor();
}

at::Tensor AffineQuantizer::fake_quantize(const at::Tensor& x) const {
  if (alpha_.defined())
    return adaround_quantize(x, scale_, zero_point_.to(at::kFloat), alpha_, range(), !adaround_soft_);
  at::Tensor scale = scale_;
  if (scale_.requires_grad()) {
    const double per_scale = double(x.numel()) / double(ch_axis_ >= 0 ? x.size(ch_axis_) : 1);
    scale = grad_scale(scale_, 1.0 / std::sqrt(per_scale * double(range().quant_max())));
  }
  if (ch_axis_ >= 0) return fake_quantize_per_channel(x, scale, zero_point_.to(at::kFloat), ch_axis_, range());
  return quant::fake_quantize(x, scale[0], zero_point_[0].to(at::kFloat), range());
}

std::vector<at::Tensor> AffineQuantizer::begin_scale_learning() {
  if (!clamp_scale_ || is_weight()) return {};
  scale_ = scale_.detach().clone().requires_grad_(true);
  return {scale_};
}

void AffineQuantizer::settle_learned_scale() {
  if (!scale_.requires_grad()) return;
  at::NoGradGuard no_grad;
  scale_.abs_().clamp_min_(std::numeric_limits<float>::epsilon());
}

void AffineQuantizer::end_scale_learning() {
  settle_learned_scale();
  scale_ = scale_.detach();
}

at::Tensor AffineQuantizer::begin_adaround(const at::Tensor& weight) {
  at::NoGradGuard no_grad;
  alpha_ = adaround_init_alpha(weight.detach(), scale_).requires_grad_(true);
  adaround_soft_ = true;
  return alpha_;
}

at::Tensor AffineQuantizer::adaround_soft_rounding() const {
  return alpha_.defined() ? rectified_sigmoid(alpha_) : at::Tensor();
}

void AffineQuantizer::harden_adaround() {
  if (!alpha_.defined()) return;
  alpha_ = alpha_.detach();
  adaround_soft_ = false;
}

at::Tensor AffineQuantizer::adaround_mask() const {
  return alpha_.defined() ? (alpha_ >= 0).to(at::kByte) : at::Tensor();
}

void AffineQuantizer::set_adaround_mask(const at::Tensor& rounds_up) {
  // Any alpha of the right sign gives the same hard rounding.
  alpha_ = rounds_up.to(scale_.device(), at::kFloat) * 2 - 1;
  adaround_soft_ = false;
}

at::Tensor AffineQuantizer::quantize_codes(const at::Tensor& x) const {
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  at::Tensor scale = scale_, zp = zero_point_.to(at::kFloat);
  if (ch_axis_ >= 0) {
    shape[size_t(ch_axis_)] = x.size(ch_axis_);
    scale = scale.reshape(shape);
    zp = zp.reshape(shape);
  } else {
    scale = scale[0];
    zp = zp[0];
  }
  const at::Tensor rounded = alpha_.defined() ? at::floor(x / scale) + (alpha_ >= 0).to(x.scalar_type()) : at::round(x / scale);
  return at::clamp(rounded + zp, range().quant_min(), range().quant_max()).to(at::kInt);
}

LogQuantizer::LogQuantizer(std::string name, QuantRange range) : Quantizer(std::move(name), range), observer_(range) {}

void LogQuantizer::observe(const at::Tensor& x, const at::Tensor& value) {
  if (!value.defined()) throw Error(name(), "AGQ needs the attention's values");
  observer_.observe(x, value);
}

void LogQuantizer::settle() {
  if (observer_.tau_errors().empty()) return;
  set_params(observer_.scale(), observer_.tau());
}

void LogQuantizer::set_params(double scale, double tau) {
  scale_ = scale;
  tau_ = tau;
  table_ = tau > 0 ? std::make_shared<const LogQuantTable>(scale, range(), tau) : nullptr;
}

std::vector<at::Tensor> LogQuantizer::begin_scale_learning() {
  learned_scale_ = at::full({1}, scale_, at::kFloat).requires_grad_(true);
  return {learned_scale_};
}

void LogQuantizer::end_scale_learning() {
  if (!learned_scale_.defined()) return;
  const double learned = learned_scale_.item<float>();
  learned_scale_ = at::Tensor();
  set_params(learned, tau_);
}

at::Tensor LogQuantizer::fake_quantize(const at::Tensor& x) const {
  if (learned_scale_.defined()) return fake_log_quantize(x, learned_scale_, range(), tau_);
  // The attention calls this on every slice of rows: the table is built once.
  if (table_ && x.scalar_type() == at::kFloat && x.is_cpu() && !(at::GradMode::is_enabled() && x.requires_grad()))
    return table_->apply(x);
  return fake_log_quantize(x, scale_, range(), tau_);
}

}  // namespace ptq4sam::quant
