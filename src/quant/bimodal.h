#pragma once
// Bimodal Integration (BIG) of PTQ4SAM: detects a two-peaked key distribution in the
// token-to-image attentions, as the seed's LSQSignFakeQuantize.judge_bimodal does with scipy's
// gaussian_kde and find_peaks, and gives the per-channel signs to fold into q_proj/k_proj.
#include <ATen/ATen.h>

#include <vector>

namespace ptq4sam::quant {

struct BimodalConfig {
  int global_num = 128;      // KDE evaluation points, evenly spaced from min to max
  int peak_distance = 32;    // minimum distance between peaks, in points
  double peak_height = 0.01; // minimum peak height, as a fraction of the curve's sum
};

struct BimodalDecision {
  bool bimodal = false;
  int peaks = 0;
  at::Tensor sign;  // float32 (channels), +-1 per channel (last axis); undefined when unimodal
};

// Gaussian KDE of `data` with Scott's bandwidth (scipy.stats.gaussian_kde), in float64,
// evaluated at `points`.
std::vector<double> gaussian_kde_scott(const at::Tensor& data, const std::vector<double>& points);

// Indices of the peaks of y as scipy.signal.find_peaks(y, height, distance): local maxima
// (a plateau's middle), at least `height`, and at least `distance` apart (higher peaks win).
std::vector<int> find_peaks(const std::vector<double>& y, double height, int distance);

// The decision on a batch of keys (batch, ..., channels): the KDE of the first sample's
// values; bimodal when exactly two peaks; then the sign of each channel's mean over the batch.
BimodalDecision detect_bimodal(const at::Tensor& keys, const BimodalConfig& config);

}  // namespace ptq4sam::quant
