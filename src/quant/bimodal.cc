#include "quant/bimodal.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ptq4sam::quant {

std::vector<double> gaussian_kde_scott(const at::Tensor& data_in, const std::vector<double>& points) {
  const at::Tensor data = data_in.detach().flatten().to(at::kDouble).contiguous();
  const int64_t n = data.numel();
  std::vector<double> density(points.size(), 0.0);
  if (n < 2) return density;
  // Scott's factor n^(-1/5) scales the unbiased sample variance (scipy: np.cov, ddof 1).
  const double variance = data.var(/*unbiased=*/true).item<double>();
  const double factor = std::pow(double(n), -1.0 / 5.0);
  const double covariance = variance * factor * factor;
  const double norm = 1.0 / (double(n) * std::sqrt(2.0 * M_PI * covariance));
  const double* values = data.data_ptr<double>();
  at::parallel_for(0, int64_t(points.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = points[size_t(p)] - values[i];
        sum += std::exp(-0.5 * d * d / covariance);
      }
      density[size_t(p)] = sum * norm;
    }
  });
  return density;
}

std::vector<int> find_peaks(const std::vector<double>& y, double height, int distance) {
  const int n = int(y.size());
  std::vector<int> peaks;
  int i = 1;
  while (i < n - 1) {
    if (y[size_t(i - 1)] < y[size_t(i)]) {
      int ahead = i + 1;
      while (ahead < n - 1 && y[size_t(ahead)] == y[size_t(i)]) ++ahead;
      if (y[size_t(ahead)] < y[size_t(i)]) {
        peaks.push_back((i + ahead - 1) / 2);
        i = ahead;
      }
    }
    ++i;
  }
  peaks.erase(std::remove_if(peaks.begin(), peaks.end(), [&](int p) { return y[size_t(p)] < height; }),
              peaks.end());
  if (distance <= 1 || peaks.size() < 2) return peaks;
  // Highest first; a kept peak removes every lower one closer than `distance`.
  std::vector<size_t> priority(peaks.size());
  std::iota(priority.begin(), priority.end(), 0);
  std::stable_sort(priority.begin(), priority.end(),
                   [&](size_t a, size_t b) { return y[size_t(peaks[a])] > y[size_t(peaks[b])]; });
  std::vector<bool> keep(peaks.size(), true);
  for (const size_t j : priority) {
    if (!keep[j]) continue;
    for (size_t k = j; k-- > 0 && peaks[j] - peaks[k] < distance;) keep[k] = false;
    for (size_t k = j + 1; k < peaks.size() && peaks[k] - peaks[j] < distance; ++k) keep[k] = false;
  }
  std::vector<int> kept;
  for (size_t j = 0; j < peaks.size(); ++j)
    if (keep[j]) kept.push_back(peaks[j]);
  return kept;
}

BimodalDecision detect_bimodal(const at::Tensor& keys, const BimodalConfig& config) {
  const at::Tensor first = keys.detach()[0].flatten().to(at::kFloat);
  const double lo = first.min().item<double>(), hi = first.max().item<double>();
  std::vector<double> points(size_t(config.global_num));
  // numpy.linspace: start + i * step, the last point exactly `hi`.
  const double step = config.global_num > 1 ? (hi - lo) / double(config.global_num - 1) : 0.0;
  for (int i = 0; i < config.global_num; ++i) points[size_t(i)] = lo + double(i) * step;
  if (config.global_num > 1) points.back() = hi;
  const std::vector<double> density = gaussian_kde_scott(first, points);
  const double total = std::accumulate(density.begin(), density.end(), 0.0);
  const std::vector<int> peaks = find_peaks(density, config.peak_height * total, config.peak_distance);
  BimodalDecision decision;
  decision.peaks = int(peaks.size());
  decision.bimodal = peaks.size() == 2;
  if (decision.bimodal) {
    const at::Tensor per_channel = keys.detach().to(at::kFloat).reshape({-1, keys.size(-1)});
    decision.sign = at::sign(per_channel.mean(0));
  }
  return decision;
}

}  // namespace ptq4sam::quant
