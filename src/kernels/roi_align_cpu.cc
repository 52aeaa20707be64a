// Channels-last RoIAlign: the four corners of a sample are four contiguous channel vectors, so
// the inner loop runs over channels in the same order of additions as mmcv's per-channel loop
// (for each sample: w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4, added in sample order, then divided
// by the count).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "kernels/roi_align.h"
#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

struct Sample {
  int64_t pos[4];
  float weight[4];
};

// mmcv's pre_calc_for_bilinear_interpolate for one sample point.
Sample bilinear_sample(float y, float x, int64_t height, int64_t width) {
  if (y < -1.0f || y > float(height) || x < -1.0f || x > float(width)) return {{0, 0, 0, 0}, {0, 0, 0, 0}};
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = int64_t(y), x_low = int64_t(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = float(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = float(x_low);
  } else {
    x_high = x_low + 1;
  }
  const float ly = y - float(y_low), lx = x - float(x_low), hy = 1.0f - ly, hx = 1.0f - lx;
  return {{y_low * width + x_low, y_low * width + x_high, y_high * width + x_low, y_high * width + x_high},
          {hy * hx, hy * lx, ly * hx, ly * lx}};
}

}  // namespace

at::Tensor roi_align(const at::Tensor& features, const std::vector<std::array<float, 4>>& rois, float spatial_scale,
                     int64_t out_size) {
  if (features.dim() != 4 || features.size(0) != 1 || features.scalar_type() != at::kFloat)
    throw Error("roi_align", "features must be float32 (1, C, H, W)");
  if (out_size < 1) throw Error("roi_align", "output size must be positive");
  const int64_t channels = features.size(1), height = features.size(2), width = features.size(3);
  const at::Tensor map = features.contiguous(at::MemoryFormat::ChannelsLast);
  const float* data = map.data_ptr<float>();
  const int64_t n = int64_t(rois.size());
  at::Tensor out = at::zeros({n, out_size, out_size, channels}, features.options());
  float* dst = out.data_ptr<float>();
  for (const auto& r : rois)
    if (!(r[2] - r[0] >= 0.0f) || !(r[3] - r[1] >= 0.0f)) throw Error("roi_align", "a RoI has negative or undefined size");
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample> samples;
    for (int64_t i = begin; i < end; ++i) {
      const auto& r = rois[size_t(i)];
      const float start_w = r[0] * spatial_scale - 0.5f, start_h = r[1] * spatial_scale - 0.5f;
      const float roi_w = r[2] * spatial_scale - 0.5f - start_w, roi_h = r[3] * spatial_scale - 0.5f - start_h;
      const float bin_w = roi_w / float(out_size), bin_h = roi_h / float(out_size);
      // ceilf of the bin size; a RoI of no size still takes one sample (the count is at least 1).
      const int64_t grid_h = int64_t(std::ceil(roi_h / float(out_size))), grid_w = int64_t(std::ceil(roi_w / float(out_size)));
      const float count = float(std::max<int64_t>(grid_h * grid_w, 1));
      for (int64_t ph = 0; ph < out_size; ++ph) {
        for (int64_t pw = 0; pw < out_size; ++pw) {
          samples.clear();
          for (int64_t iy = 0; iy < grid_h; ++iy) {
            const float y = start_h + float(ph) * bin_h + (float(iy) + 0.5f) * bin_h / float(grid_h);
            for (int64_t ix = 0; ix < grid_w; ++ix) {
              const float x = start_w + float(pw) * bin_w + (float(ix) + 0.5f) * bin_w / float(grid_w);
              samples.push_back(bilinear_sample(y, x, height, width));
            }
          }
          float* o = dst + ((i * out_size + ph) * out_size + pw) * channels;
          for (const Sample& s : samples) {
            const float* v1 = data + s.pos[0] * channels;
            const float* v2 = data + s.pos[1] * channels;
            const float* v3 = data + s.pos[2] * channels;
            const float* v4 = data + s.pos[3] * channels;
            for (int64_t c = 0; c < channels; ++c)
              o[c] += s.weight[0] * v1[c] + s.weight[1] * v2[c] + s.weight[2] * v3[c] + s.weight[3] * v4[c];
          }
          for (int64_t c = 0; c < channels; ++c) o[c] /= count;
        }
      }
    }
  });
  return out;
}

}  // namespace ptq4sam::kernels
