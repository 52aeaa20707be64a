#include "quant/quantizer.h"

#include <cmath>
#include <limits>

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
    case QuantMode::kSimulate:
      return fake_quantize(x);
    case QuantMode::kMeasure: {
      const at::Tensor xd = x.detach();
      signal_ += xd.to(at::kDouble).pow(2).sum().item<double>();
      noise_ += (fake_quantize(xd) - xd).to(at::kDouble).pow(2).sum().item<double>();
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

double Quantizer::sqnr_db() const { return sqnr_db_of(signal_, noise_); }

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

at::Tensor AffineQuantizer::fake_quantize(const at::Tensor& x) const {
  if (ch_axis_ >= 0) return fake_quantize_per_channel(x, scale_, zero_point_.to(at::kFloat), ch_axis_, range());
  return quant::fake_quantize(x, scale_[0], zero_point_[0].to(at::kFloat), range());
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
  return at::clamp(at::round(x / scale) + zp, range().quant_min(), range().quant_max()).to(at::kInt);
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
}

at::Tensor LogQuantizer::fake_quantize(const at::Tensor& x) const { return fake_log_quantize(x, scale_, range(), tau_); }

}  // namespace ptq4sam::quant
