#pragma once
// A quantizer at one point of the model (sam::QuantPoint), as the seed's QuantizeBase
// subclasses: it observes during calibration, fake-quantizes once calibrated, and can measure
// its own error. Affine (per tensor or per channel) for inputs, weights, q/k/v; logarithmic
// (AGQ) for softmax outputs.
#include <memory>
#include <string>
#include <vector>

#include "quant/fake_quant.h"
#include "quant/observer.h"
#include "sam/quant_point.h"

namespace ptq4sam::quant {

// 10 log10(signal / noise) from energies; +inf when the noise is zero.
double sqnr_db_of(double signal, double noise);

// Signal and noise energies accumulated over tensors: sum of reference^2 and of
// (approx - reference)^2, in float64, one pass without temporaries for float32 inputs (the
// measured tensors include whole attention maps).
struct Energies {
  double signal = 0, noise = 0;
  void add(const at::Tensor& reference, const at::Tensor& approx);
  double sqnr_db() const { return sqnr_db_of(signal, noise); }
};

enum class QuantMode {
  kOff,        // identity (FP32)
  kCalibrate,  // observers on, quantization off
  kSimulate,   // fake quantization on, observers off
  kMeasure,    // identity, but accumulates the SQNR its quantization would have
};

class Quantizer : public sam::QuantPoint {
 public:
  Quantizer(std::string name, QuantRange range) : name_(std::move(name)), range_(range) {}
  at::Tensor apply(const at::Tensor& x, const at::Tensor& value) override;
  bool needs_whole_tensor() const override { return mode_ == QuantMode::kCalibrate; }
  bool elementwise() const override { return mode_ != QuantMode::kCalibrate && !capture_; }
  at::Tensor grid_step() const override { return {}; }
  bool stateless() const override {
    return !capture_ && (mode_ == QuantMode::kOff || (mode_ == QuantMode::kSimulate && drop_prob_ >= 1.0));
  }

  // Leaving kCalibrate settles the parameters from the observer.
  void set_mode(QuantMode mode);
  QuantMode mode() const { return mode_; }
  const std::string& name() const { return name_; }
  const QuantRange& range() const { return range_; }
  bool is_weight() const;
  // For a weight quantizer "<layer>.weight_fake_quant", the parameter it quantizes: "<layer>.weight".
  std::string weight_key() const;
  // Whether parameters exist (from calibration or set explicitly).
  virtual bool ready() const = 0;
  virtual at::Tensor fake_quantize(const at::Tensor& x) const = 0;

  // Keeps a copy of the next tensor that passes (BIG looks at the first image's keys).
  void capture_next() { capture_ = true; }
  at::Tensor take_captured();

  // 10 log10(sum x^2 / sum (Q(x) - x)^2) over everything seen in kMeasure; +inf when exact.
  double sqnr_db() const;

  // QDrop, for reconstruction only: while simulating, each element keeps its quantized value
  // with probability p and its input otherwise (1, the default, quantizes everything).
  void set_drop_prob(double p) { drop_prob_ = p; }
  double drop_prob() const { return drop_prob_; }
  // Reconstruction's learnable scales (the seed's LSQ and AGQ scales): returns the leaf tensors
  // to optimise, empty when this quantizer learns nothing. fake_quantize differentiates through
  // them until end_scale_learning(), which keeps their last values.
  virtual std::vector<at::Tensor> begin_scale_learning() { return {}; }
  // After each optimiser step: the seed's forward keeps |scale| >= eps for LSQ.
  virtual void settle_learned_scale() {}
  virtual void end_scale_learning() {}

 protected:
  virtual void observe(const at::Tensor& x, const at::Tensor& value) = 0;
  virtual void settle() = 0;

 private:
  std::string name_;
  QuantRange range_;
  QuantMode mode_ = QuantMode::kOff;
  bool capture_ = false;
  at::Tensor captured_;
  Energies energies_;
  double drop_prob_ = 1.0;
};

// Uniform affine quantization with an observer; ch_axis >= 0 for per-channel weights.
class AffineQuantizer : public Quantizer {
 public:
  // `clamp_scale`: the seed's LSQ quantizers keep the scale >= float32 epsilon.
  AffineQuantizer(std::string name, QuantRange range, int64_t ch_axis, std::unique_ptr<Observer> observer,
                  bool clamp_scale);
  bool ready() const override { return scale_.defined(); }
  at::Tensor fake_quantize(const at::Tensor& x) const override;
  at::Tensor grid_step() const override;
  // The integer codes of x in [quant_min, quant_max] (int32), as fake_quantize rounds them.
  at::Tensor quantize_codes(const at::Tensor& x) const;
  void set_params(const at::Tensor& scale, const at::Tensor& zero_point);
  const at::Tensor& scale() const { return scale_; }            // float32, (1) or (channels)
  const at::Tensor& zero_point() const { return zero_point_; }  // int32, same shape
  int64_t ch_axis() const { return ch_axis_; }
  // Replaces the observer (BIG's keys use the sign-aware MSE search whatever the config says).
  void set_observer(std::unique_ptr<Observer> observer) { observer_ = std::move(observer); }

  // LSQ quantizers (the ones that clamp their scale) learn it; the gradient is scaled by
  // 1 / sqrt(elements per scale * quant_max), as the seed's use_grad_scaling.
  std::vector<at::Tensor> begin_scale_learning() override;
  void settle_learned_scale() override;
  void end_scale_learning() override;

  // AdaRound of this weight quantizer's `weight` (quant/adaround.h): returns alpha, the leaf
  // to optimise; fake_quantize then rounds softly (floor + h(alpha)).
  at::Tensor begin_adaround(const at::Tensor& weight);
  // h(alpha) in [0, 1], for the rounding regulariser; undefined without AdaRound.
  at::Tensor adaround_soft_rounding() const;
  // Fixes the rounding to floor + [alpha >= 0], for fake_quantize and quantize_codes alike.
  void harden_adaround();
  // The hardened rounding as uint8 (1: rounds up), undefined without AdaRound; and back.
  at::Tensor adaround_mask() const;
  void set_adaround_mask(const at::Tensor& rounds_up);

 protected:
  void observe(const at::Tensor& x, const at::Tensor& value) override;
  void settle() override;

 private:
  int64_t ch_axis_;
  std::unique_ptr<Observer> observer_;
  bool clamp_scale_;
  at::Tensor scale_, zero_point_;
  at::Tensor alpha_;  // AdaRound's rounding variables, shaped as the weight
  bool adaround_soft_ = false;
};

// AGQ: s * 2^(-q / tau) for post-softmax attention; tau and s chosen by AgqObserver.
class LogQuantizer : public Quantizer {
 public:
  LogQuantizer(std::string name, QuantRange range);
  bool ready() const override { return tau_ > 0; }
  at::Tensor fake_quantize(const at::Tensor& x) const override;
  void set_params(double scale, double tau);
  // AGQ's scale is learned in float32, as the seed's nn.Parameter.
  std::vector<at::Tensor> begin_scale_learning() override;
  void end_scale_learning() override;
  double scale() const { return scale_; }
  double tau() const { return tau_; }
  // The grid of scale() and tau() (null before they are set); fake_quantize applies it unless
  // the scale is being learned.
  const std::shared_ptr<const LogQuantTable>& table() const { return table_; }
  const AgqObserver& observer() const { return observer_; }

 protected:
  void observe(const at::Tensor& x, const at::Tensor& value) override;
  void settle() override;

 private:
  AgqObserver observer_;
  double scale_ = 0, tau_ = 0;
  std::shared_ptr<const LogQuantTable> table_;
  at::Tensor learned_scale_;
};

}  // namespace ptq4sam::quant
