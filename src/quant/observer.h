#pragma once
// Observers of the PTQ4SAM seed (ptq4sam/quantization/observer.py): they watch tensors during
// calibration and settle a range [min_val, max_val], from which calculate_qparams derives the
// scale and zero point. Float32 throughout, in the seed's order of operations.
#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "quant/fake_quant.h"

namespace ptq4sam::quant {

// Scale and zero point of a range: symmetric scale = max(|min|, max) / ((qmax - qmin) / 2);
// asymmetric scale = (max - min) / (qmax - qmin), zero point qmin - round(min / scale)
// clamped; the range always includes 0 and the scale is at least 1e-8.
std::pair<at::Tensor, at::Tensor> calculate_qparams(const at::Tensor& min_val, const at::Tensor& max_val,
                                                    const QuantRange& range);

class Observer {
 public:
  Observer(QuantRange range, int64_t ch_axis) : range_(range), ch_axis_(ch_axis) {}
  virtual ~Observer() = default;
  virtual void observe(const at::Tensor& x) = 0;
  std::pair<at::Tensor, at::Tensor> qparams() const { return calculate_qparams(min_val_, max_val_, range_); }
  const at::Tensor& min_val() const { return min_val_; }
  const at::Tensor& max_val() const { return max_val_; }
  const QuantRange& range() const { return range_; }
  int64_t ch_axis() const { return ch_axis_; }

 protected:
  // x flattened per channel: (channels, rest), channel axis first.
  at::Tensor per_channel(const at::Tensor& x) const;
  // min and max of x, per tensor or per channel.
  std::pair<at::Tensor, at::Tensor> observed_range(const at::Tensor& x) const;
  // Folds this batch's range into the running average over `count` earlier batches.
  void average_in(const at::Tensor& lo, const at::Tensor& hi, int64_t count);
  // Widens the running range to include [lo, hi].
  void widen_to(const at::Tensor& lo, const at::Tensor& hi);
  QuantRange range_;
  int64_t ch_axis_;  // -1: per tensor
  at::Tensor min_val_, max_val_;
};

// Running min and max over everything observed.
class MinMaxObserver : public Observer {
 public:
  using Observer::Observer;
  void observe(const at::Tensor& x) override;
};

// Min and max of each batch, averaged over batches (per tensor).
class AvgMinMaxObserver : public Observer {
 public:
  explicit AvgMinMaxObserver(QuantRange range) : Observer(range, -1) {}
  void observe(const at::Tensor& x) override;

 private:
  int64_t count_ = 0;
};

// Grid search of the range minimising mean |Q(x) - x|^2.4: 100 ranges, and for two-sided
// data every zero point of the grid (per channel when ch_axis >= 0); the running min/max of
// the best ranges over batches.
class MseObserver : public Observer {
 public:
  // `average`: the seed's AvgMSEObserver, the best ranges averaged over batches instead.
  MseObserver(QuantRange range, int64_t ch_axis, bool average = false)
      : Observer(range, ch_axis), average_(average) {}
  void observe(const at::Tensor& x) override;

 private:
  bool average_;
  int64_t count_ = 0;
  at::Tensor loss(const at::Tensor& x, const at::Tensor& new_min, const at::Tensor& new_max) const;
  std::pair<at::Tensor, at::Tensor> search_1d(const at::Tensor& x) const;
  std::pair<at::Tensor, at::Tensor> search_2d(const at::Tensor& x) const;
  enum class Side { kUnset, kPositive, kNegative, kBoth } side_ = Side::kUnset;
};

// The seed's AvgMSEFastObserver (per tensor): per batch, a bounded Brent search of the range
// (then, for two-sided data, of the shift of the grid) minimising mean |Q(x) - x|^2.4; the
// best min and max averaged over batches. The seed's sign-aware variant for BIG keys is the same
// search: it multiplies both Q(x) and x by a sign, which leaves |Q(x) - x| unchanged.
class MseFastObserver : public Observer {
 public:
  // `average` false: the seed's MSEFastObserver, the running min/max of the best ranges.
  explicit MseFastObserver(QuantRange range, bool average = true) : Observer(range, -1), average_(average) {}
  void observe(const at::Tensor& x) override;

 private:
  double loss(const at::Tensor& x, double new_min, double new_max) const;
  double best_shift_loss(const at::Tensor& x, double range, double* best_shift) const;
  bool average_;
  int64_t count_ = 0;
  enum class Side { kUnset, kPositive, kNegative, kBoth } side_ = Side::kUnset;
};

// The seed's PCTObserver: of its candidate percentiles {99, 99.9, 99.99, 99.999} the last one
// always wins (its search never updates the best score), so each batch's range is the
// [0.001%, 99.999%] quantile interval (linear interpolation); running min/max over batches.
class PercentileObserver : public Observer {
 public:
  explicit PercentileObserver(QuantRange range) : Observer(range, -1) {}
  void observe(const at::Tensor& x) override;
};

// AGQ's observer of post-softmax attention A with its values V: per batch and per tau in
// {1, 2, 4}, the scale s minimising mean |(Q(A) - A) V|^2.4 with Q the log quantizer; scales
// averaged and errors summed over batches; the tau of least total error wins.
class AgqObserver {
 public:
  explicit AgqObserver(QuantRange range, std::vector<double> taus = {1, 2, 4})
      : range_(range), taus_(std::move(taus)) {}
  void observe(const at::Tensor& attn, const at::Tensor& value);
  const std::vector<double>& taus() const { return taus_; }
  const std::vector<double>& tau_scales() const { return scales_; }
  const std::vector<double>& tau_errors() const { return errors_; }
  // The winning tau and its scale.
  double tau() const;
  double scale() const;

 private:
  size_t best_index() const;
  QuantRange range_;
  std::vector<double> taus_;
  std::vector<double> scales_;  // float32 values, averaged as the seed does
  std::vector<double> errors_;
  int64_t count_ = 0;
};

}  // namespace ptq4sam::quant
