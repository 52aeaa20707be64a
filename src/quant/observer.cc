#include "quant/observer.h"

#include "quant/brent.h"
#include "quant/observer_search.h"

#include <algorithm>
#include <cmath>

namespace ptq4sam::quant {
namespace {

constexpr int kCandidates = 100;
constexpr double kLossPower = 2.4;

bool is_float32(const at::Tensor& x) { return x.scalar_type() == at::kFloat; }

}  // namespace

std::pair<at::Tensor, at::Tensor> calculate_qparams(const at::Tensor& min_val, const at::Tensor& max_val,
                                                    const QuantRange& range) {
  const int64_t qmin = range.quant_min(), qmax = range.quant_max();
  const at::Tensor min_neg = at::min(min_val, at::zeros_like(min_val));
  at::Tensor max_pos = at::max(max_val, at::zeros_like(max_val));
  const at::Tensor eps = at::full({}, 1e-8, at::kFloat);
  if (range.symmetric) {
    max_pos = at::max(-min_neg, max_pos);
    const at::Tensor scale = at::max(max_pos / (double(qmax - qmin) / 2), eps);
    return {scale, at::zeros(min_val.sizes(), at::kInt)};
  }
  const at::Tensor scale = at::max((max_pos - min_neg) / double(qmax - qmin), eps);
  at::Tensor zero_point = qmin - at::round(min_neg / scale);
  zero_point = at::clamp(zero_point, qmin, qmax);
  return {scale, zero_point};
}

at::Tensor Observer::per_channel(const at::Tensor& x) const {
  if (ch_axis_ == -1) return x;
  return x.transpose(0, ch_axis_).flatten(1);
}

std::pair<at::Tensor, at::Tensor> Observer::observed_range(const at::Tensor& x) const {
  if (ch_axis_ == -1) return {x.min(), x.max()};
  auto [lo, hi] = at::aminmax(per_channel(x), 1);
  return {lo, hi};
}

void Observer::average_in(const at::Tensor& lo, const at::Tensor& hi, int64_t count) {
  if (count == 0) {
    min_val_ = lo;
    max_val_ = hi;
  } else {
    min_val_ = min_val_ * double(count) + lo;
    max_val_ = max_val_ * double(count) + hi;
  }
  min_val_ = min_val_ / double(count + 1);
  max_val_ = max_val_ / double(count + 1);
}

void Observer::widen_to(const at::Tensor& lo, const at::Tensor& hi) {
  min_val_ = min_val_.defined() ? at::min(min_val_, lo) : lo;
  max_val_ = max_val_.defined() ? at::max(max_val_, hi) : hi;
}

void MinMaxObserver::observe(const at::Tensor& x_in) {
  if (x_in.numel() == 0) return;
  const at::Tensor x = x_in.detach().to(at::kFloat);
  const auto [lo, hi] = observed_range(x);
  widen_to(lo, hi);
}

void AvgMinMaxObserver::observe(const at::Tensor& x_in) {
  if (x_in.numel() == 0) return;
  const at::Tensor x = x_in.detach().to(at::kFloat);
  average_in(x.min(), x.max(), count_++);
}

at::Tensor MseObserver::loss(const at::Tensor& x, const at::Tensor& new_min, const at::Tensor& new_max) const {
  const auto [scale, zero_point] = calculate_qparams(new_min, new_max, range_);
  const at::Tensor zp = zero_point.to(at::kInt);
  const at::Tensor x_q = ch_axis_ == -1 ? fake_quantize(x, scale, zp, range_)
                                        : fake_quantize_per_channel(x, scale, zp, ch_axis_, range_);
  const at::Tensor err = (x_q - x).abs().pow(kLossPower);
  return ch_axis_ == -1 ? err.mean() : per_channel(err).mean(1);
}

std::pair<at::Tensor, at::Tensor> MseObserver::search_1d(const at::Tensor& x) const {
  const auto [x_min, x_max] = observed_range(x);
  const at::Tensor xrange = at::max(x_min.abs(), x_max);
  at::Tensor best_score = at::zeros_like(x_min) + 1e10;
  at::Tensor best_min = x_min.clone(), best_max = x_max.clone();
  for (int i = 1; i <= kCandidates; ++i) {
    const at::Tensor thres = xrange / kCandidates * i;
    const at::Tensor new_min = side_ == Side::kPositive ? at::zeros_like(x_min) : -thres;
    const at::Tensor new_max = side_ == Side::kNegative ? at::zeros_like(x_max) : thres;
    const at::Tensor score = loss(x, new_min, new_max);
    best_min = at::where(score < best_score, new_min, best_min);
    best_max = at::where(score < best_score, new_max, best_max);
    best_score = at::min(score, best_score);
  }
  return {best_min, best_max};
}

std::pair<at::Tensor, at::Tensor> MseObserver::search_2d(const at::Tensor& x) const {
  auto [x_min, x_max] = observed_range(x);
  if (ch_axis_ != -1) {
    // Per channel the grid always includes 0 (the seed's rule; not per tensor).
    x_max = at::max(x_max, at::zeros_like(x_max));
    x_min = at::min(x_min, at::zeros_like(x_min));
  }
  const at::Tensor rows = ch_axis_ == -1 ? x.reshape({1, -1}) : per_channel(x);
  return mse_grid_search_2d(rows, x_min, x_max, range_);
}

void MseObserver::observe(const at::Tensor& x_in) {
  if (x_in.numel() == 0) return;
  const at::Tensor x = x_in.detach().to(at::kFloat);
  if (side_ == Side::kUnset) {
    side_ = x.min().item<float>() >= 0.0f ? Side::kPositive : x.max().item<float>() <= 0.0f ? Side::kNegative : Side::kBoth;
  }
  const auto [lo, hi] = (side_ != Side::kBoth || range_.symmetric) ? search_1d(x) : search_2d(x);
  if (average_) {
    average_in(lo, hi, count_++);
    return;
  }
  widen_to(lo, hi);
}

void PercentileObserver::observe(const at::Tensor& x_in) {
  if (x_in.numel() == 0) return;
  const at::Tensor sorted = std::get<0>(x_in.detach().to(at::kFloat).flatten().sort());
  const auto quantile = [&](double q) {
    const double position = q * double(sorted.numel() - 1);
    const int64_t below = int64_t(std::floor(position));
    const int64_t above = std::min(below + 1, sorted.numel() - 1);
    const at::Tensor lower = sorted[below], upper = sorted[above];
    return at::lerp(lower, upper, position - double(below));
  };
  constexpr double kPercentile = 0.99999;
  const at::Tensor lo = quantile(1.0 - kPercentile), hi = quantile(kPercentile);
  widen_to(lo, hi);
}

double MseFastObserver::loss(const at::Tensor& x, double new_min, double new_max) const {
  // The seed makes the candidate range float64 tensors (torch.tensor of scipy's numpy floats),
  // so the qparams are float64; the quantization runs in x's type.
  const at::Tensor lo = at::full({}, new_min, at::kDouble), hi = at::full({}, new_max, at::kDouble);
  const auto [scale, zero_point] = calculate_qparams(lo, hi, range_);
  return affine_loss(x, scale.item<double>(), zero_point.round().item<double>(), range_);
}

double MseFastObserver::best_shift_loss(const at::Tensor& x, double range, double* best_shift) const {
  const double delta = range / double(range_.quant_max() - range_.quant_min());
  const BoundedMinimum m =
      minimize_bounded([&](double shift) { return loss(x, 0.0 - shift, range - shift); },
                       delta * double(range_.quant_min()), delta * double(range_.quant_max()), is_float32(x));
  if (best_shift) *best_shift = m.x;
  return m.fun;
}

void MseFastObserver::observe(const at::Tensor& x_in) {
  if (x_in.numel() == 0) return;
  // The seed casts each batch to its min_val's dtype, which is float64 once a float64 range
  // has been averaged in: from the second batch on, the search may run in float64.
  const at::Tensor x = x_in.detach().to(min_val_.defined() ? min_val_.scalar_type() : at::kFloat);
  const at::Tensor x_min = x.min(), x_max = x.max();
  if (side_ == Side::kUnset)
    side_ = x_min.item<double>() >= 0.0 ? Side::kPositive : x_max.item<double>() <= 0.0 ? Side::kNegative : Side::kBoth;
  at::Tensor best_min, best_max;
  if (side_ != Side::kBoth || range_.symmetric) {
    const double xrange = at::max(x_min.abs(), x_max).item<double>();
    const BoundedMinimum m = minimize_bounded(
        [&](double r) { return loss(x, side_ == Side::kPositive ? 0.0 : -r, side_ == Side::kNegative ? 0.0 : r); },
        std::min(0.1, 0.01 * xrange), xrange, is_float32(x));
    const at::Tensor r = at::full({}, m.x, at::kDouble);
    best_min = side_ == Side::kPositive ? at::zeros_like(x_min) : -r;
    best_max = side_ == Side::kNegative ? at::zeros_like(x_max) : r;
  } else {
    const double xrange = (x_max - x_min).item<double>();
    const BoundedMinimum m = minimize_bounded([&](double r) { return best_shift_loss(x, r, nullptr); },
                                              std::min(0.1, 0.01 * xrange), xrange, is_float32(x));
    double shift = 0;
    best_shift_loss(x, m.x, &shift);
    // Python's max/min of a numpy float64 and a 0-d tensor keep whichever wins (and its type).
    const double lo = 0.0 - shift, hi = m.x - shift;
    best_min = x_min.item<double>() > lo ? x_min : at::full({}, lo, at::kDouble);
    best_max = x_max.item<double>() < hi ? x_max : at::full({}, hi, at::kDouble);
  }
  if (average_) {
    average_in(best_min, best_max, count_++);
  } else {
    widen_to(best_min, best_max);
  }
}

void AgqObserver::observe(const at::Tensor& attn_in, const at::Tensor& value) {
  const at::Tensor attn = attn_in.detach().to(at::kFloat);
  const at::Tensor v = value.detach().to(at::kFloat);
  const at::Tensor reference = at::matmul(attn, v);
  const double xrange = at::max(attn.min().abs(), attn.max()).item<double>();
  std::vector<double> scales, errors;
  for (const double tau : taus_) {
    const BoundedMinimum m = minimize_bounded(
        [&](double r) {
          const double s = double(float(r));  // torch.tensor(new_max).item()
          return agq_loss(attn, v, reference, s, range_, tau);
        },
        std::min(0.1, 0.01 * xrange), xrange, /*float32_losses=*/true);
    scales.push_back(double(float(m.x)));
    errors.push_back(double(m.fun));
  }
  if (count_ == 0) {
    scales_ = scales;
    errors_ = errors;
  } else {
    for (size_t i = 0; i < taus_.size(); ++i) {
      scales_[i] = double(float(float(scales_[i]) * float(count_) + float(scales[i])));
      errors_[i] = double(float(errors_[i]) + float(errors[i]));
    }
  }
  ++count_;
  for (auto& s : scales_) s = double(float(s) / float(count_));
}

size_t AgqObserver::best_index() const {
  return size_t(std::min_element(errors_.begin(), errors_.end()) - errors_.begin());
}

double AgqObserver::tau() const { return taus_[best_index()]; }

double AgqObserver::scale() const { return scales_[best_index()]; }

}  // namespace ptq4sam::quant
