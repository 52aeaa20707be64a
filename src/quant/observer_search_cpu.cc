#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/matmul.h"
#include "quant/observer_search.h"

namespace ptq4sam::quant {
namespace {

constexpr int kCandidates = 100;
constexpr double kLossPower = 2.4;

struct AffineParams {
  float scale;
  float zero_point;
};

// calculate_qparams of one asymmetric range, in the seed's float32 operations.
AffineParams affine_params(float lo, float hi, int64_t qmin, int64_t qmax) {
  const float min_neg = std::min(lo, 0.0f), max_pos = std::max(hi, 0.0f);
  const float scale = std::max((max_pos - min_neg) / float(qmax - qmin), 1e-8f);
  const float zero_point = float(qmin) - std::nearbyint(min_neg / scale);
  return {scale, std::min(std::max(zero_point, float(qmin)), float(qmax))};
}

// Everything of one row's search that depends on the scale only: inside the grid, the error of
// x is |round(x / s) * s - x| whatever the zero point, so its powers are summed once per scale.
struct ScaleTerms {
  float scale = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> code;           // round(x / s) of the sorted row
  std::vector<double> inside_prefix;  // prefix sums of |round(x / s) s - x|^2.4

  void compute(const std::vector<float>& sorted, float s) {
    const size_t n = sorted.size();
    scale = s;
    code.resize(n);
    inside_prefix.resize(n + 1);
    inside_prefix[0] = 0.0;
    for (size_t j = 0; j < n; ++j) {
      code[j] = std::nearbyint(sorted[j] / s);
      inside_prefix[j + 1] = inside_prefix[j] + double(std::pow(std::fabs(code[j] * s - sorted[j]), float(kLossPower)));
    }
  }
};

// Sum of |Q(x) - x|^2.4 over a sorted row for one (scale, zero point), or any value above
// `give_up` once the partial sum passes it. Elements whose code leaves [qmin, qmax] are the
// row's two ends; they are clipped to the grid's edge and summed from the outside in.
double grid_loss_sum(const std::vector<float>& sorted, const ScaleTerms& terms, float zero_point, int64_t qmin,
                     int64_t qmax, double give_up) {
  const float low_code = float(qmin) - zero_point, high_code = float(qmax) - zero_point;
  const auto begin = terms.code.begin();
  const size_t first_inside = size_t(std::lower_bound(begin, terms.code.end(), low_code) - begin);
  const size_t end_inside = size_t(std::upper_bound(begin, terms.code.end(), high_code) - begin);
  double sum = terms.inside_prefix[std::max(end_inside, first_inside)] - terms.inside_prefix[first_inside];
  if (sum > give_up) return sum;
  const float low_value = low_code * terms.scale, high_value = high_code * terms.scale;
  for (size_t j = 0; j < first_inside; ++j) {
    sum += double(std::pow(std::fabs(low_value - sorted[j]), float(kLossPower)));
    if (sum > give_up) return sum;
  }
  for (size_t j = sorted.size(); j-- > std::max(end_inside, first_inside);) {
    sum += double(std::pow(std::fabs(high_value - sorted[j]), float(kLossPower)));
    if (sum > give_up) return sum;
  }
  return sum;
}

std::pair<float, float> search_row(std::vector<float>& sorted, float row_min, float row_max, int64_t qmin,
                                   int64_t qmax) {
  std::sort(sorted.begin(), sorted.end());
  const double count = double(sorted.size());
  const float xrange = row_max - row_min;
  // Float32 rounding of (max - p) - (0 - p) makes the scale of one range take a few values
  // that alternate over the zero points: keep the terms of each.
  std::array<ScaleTerms, 4> cache;
  size_t next_slot = 0;
  const auto terms_of = [&](float scale) -> const ScaleTerms& {
    for (const ScaleTerms& t : cache)
      if (t.scale == scale) return t;
    ScaleTerms& slot = cache[next_slot];
    next_slot = (next_slot + 1) % cache.size();
    slot.compute(sorted, scale);
    return slot;
  };
  struct Candidate {
    float score = 1e10f, min = 0, max = 0;
    int64_t order = std::numeric_limits<int64_t>::max();  // position in the seed's loop
  };
  const int64_t zero_points = qmax - qmin + 1;
  const auto evaluate = [&](int i, int64_t zp, float bound) {
    const float tmp_max = xrange / float(kCandidates) * float(i);
    const float tmp_delta = (tmp_max - 0.0f) / float(qmax - qmin);
    Candidate c;
    c.min = 0.0f - float(zp) * tmp_delta;
    c.max = tmp_max - float(zp) * tmp_delta;
    c.order = int64_t(i - 1) * zero_points + (zp - qmin);
    const AffineParams p = affine_params(c.min, c.max, qmin, qmax);
    // A margin above the bound keeps every candidate whose float32 mean could still tie it.
    const double give_up = double(bound) * count * (1.0 + 1e-6);
    c.score = float(grid_loss_sum(sorted, terms_of(p.scale), p.zero_point, qmin, qmax, give_up) / count);
    return c;
  };
  // The widest range at the data's own zero point bounds the search from the start, so that
  // hopeless candidates are abandoned after a few elements; the seed's order still breaks ties.
  const float widest_delta = xrange / float(qmax - qmin);
  const int64_t natural_zp =
      widest_delta > 0.0f ? std::min(qmax, std::max(qmin, int64_t(std::nearbyint(-row_min / widest_delta)))) : qmin;
  const Candidate seed = evaluate(kCandidates, natural_zp, 1e10f);
  Candidate best;
  best.score = seed.score;
  for (int i = 1; i <= kCandidates; ++i) {
    for (int64_t zp = qmin; zp <= qmax; ++zp) {
      const Candidate c = evaluate(i, zp, best.score);
      if (c.score < best.score || (c.score == best.score && c.order < best.order)) best = c;
    }
  }
  if (best.order == std::numeric_limits<int64_t>::max()) return {row_min, row_max};
  return {best.min, best.max};
}

// |Q(x) - x| in one pass; the power and the mean are left to ATen, whose float32 rounding
// the Brent searches are sensitive to (their parabola steps compare nearly equal losses).
template <typename T>
at::Tensor affine_abs_error(const at::Tensor& x_in, double scale_in, double zero_point_in, const QuantRange& range) {
  const at::Tensor x = x_in.contiguous();
  at::Tensor error = at::empty_like(x);
  const T* data = x.data_ptr<T>();
  T* out = error.data_ptr<T>();
  const T scale = T(scale_in), zero_point = T(zero_point_in);
  const T qmin = T(range.quant_min()), qmax = T(range.quant_max());
  at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T code = std::min(std::max(std::nearbyint(data[i] / scale) + zero_point, qmin), qmax);
      out[i] = std::fabs((code - zero_point) * scale - data[i]);
    }
  });
  return error;
}

}  // namespace

double affine_loss(const at::Tensor& x_in, double scale, double zero_point, const QuantRange& range) {
  const at::Tensor x = x_in.cpu();  // these kernels read host memory, whatever the model's device
  const at::Tensor error = x.scalar_type() == at::kDouble ? affine_abs_error<double>(x, scale, zero_point, range)
                                                         : affine_abs_error<float>(x.to(at::kFloat), scale, zero_point, range);
  return error.pow_(kLossPower).mean().item<double>();
}

std::pair<at::Tensor, at::Tensor> mse_grid_search_2d(const at::Tensor& rows_in, const at::Tensor& row_min,
                                                     const at::Tensor& row_max, const QuantRange& range) {
  const at::Tensor rows = rows_in.cpu().to(at::kFloat).contiguous();
  const at::Tensor lo_in = row_min.cpu().to(at::kFloat).contiguous().view({-1});
  const at::Tensor hi_in = row_max.cpu().to(at::kFloat).contiguous().view({-1});
  const int64_t channels = lo_in.numel(), n = rows.numel() / channels;
  at::Tensor best_min = at::empty({channels}, at::kFloat), best_max = at::empty({channels}, at::kFloat);
  const float* data = rows.data_ptr<float>();
  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> sorted;
    for (int64_t c = begin; c < end; ++c) {
      sorted.assign(data + c * n, data + (c + 1) * n);
      const auto [lo, hi] = search_row(sorted, lo_in.data_ptr<float>()[c], hi_in.data_ptr<float>()[c],
                                       range.quant_min(), range.quant_max());
      best_min.data_ptr<float>()[c] = lo;
      best_max.data_ptr<float>()[c] = hi;
    }
  });
  return {best_min.view(row_min.sizes()).to(row_min.device()), best_max.view(row_max.sizes()).to(row_max.device())};
}

double agq_loss(const at::Tensor& attn, const at::Tensor& value, const at::Tensor& reference, double scale,
                const QuantRange& range, double tau) {
  const at::Tensor a = attn.cpu().contiguous().view({-1, attn.size(-2), attn.size(-1)});
  const at::Tensor v = value.cpu().contiguous().view({-1, value.size(-2), value.size(-1)});
  const at::Tensor ref = reference.cpu().contiguous().view({-1, reference.size(-2), reference.size(-1)});
  const int64_t batch = a.size(0), n = a.size(1), cols = a.size(2);
  // Small maps take ATen's batched matmul whole, as the seed (its small-matrix kernel rounds
  // differently from a BLAS call per block); large ones go block by block through BLAS.
  if (a.numel() <= (int64_t(1) << 22)) {
    const at::Tensor out = at::matmul(fake_log_quantize(a, scale, range, tau), v);
    return (out - ref).abs().pow(kLossPower).mean().item<double>();
  }
  const LogQuantTable table(scale, range, tau);
  constexpr int64_t kRows = 64;
  const int64_t blocks_per_batch = (n + kRows - 1) / kRows;
  at::Tensor out = at::empty(ref.sizes(), at::kFloat);
  at::parallel_for(0, batch * blocks_per_batch, 1, [&](int64_t begin, int64_t end) {
    at::Tensor quantized = at::empty({kRows, cols}, at::kFloat);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks_per_batch, row0 = (task % blocks_per_batch) * kRows;
      const int64_t rows = std::min(kRows, n - row0);
      table.apply(a[b].data_ptr<float>() + row0 * cols, quantized.data_ptr<float>(), rows * cols);
      kernels::matmul_into(quantized.narrow(0, 0, rows), v[b], out[b].narrow(0, row0, rows));
    }
  });
  // The error of the small output by ATen, as the seed computes it.
  return (out - ref).abs().pow(kLossPower).mean().item<double>();
}

}  // namespace ptq4sam::quant
