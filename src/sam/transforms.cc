#include "sam/transforms.h"

#include <cmath>
#include <vector>

namespace ptq4sam::sam {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

// Pillow's precompute_coeffs for the bilinear (triangle, support 1) filter, already normalised
// to fixed point as its normalize_coeffs_8bpc.
struct ResampleCoeffs {
  int64_t ksize = 0;
  std::vector<int64_t> bounds;  // per output: first input index, count
  std::vector<int32_t> weights;  // per output: ksize weights
};

ResampleCoeffs precompute_coeffs(int64_t in_size, int64_t out_size) {
  const double scale = double(in_size) / double(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  ResampleCoeffs c;
  c.ksize = int64_t(std::ceil(support)) * 2 + 1;
  c.bounds.resize(out_size * 2);
  c.weights.assign(out_size * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (double(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = int64_t(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      double t = (double(x + xmin) - center + 0.5) * ss;
      t = std::fabs(t);
      const double w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      c.weights[xx * c.ksize + x] = w < 0 ? int32_t(-0.5 + w * (1 << kPrecisionBits)) : int32_t(0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int64_t v) {
  if (v >= (int64_t(1) << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

// Resamples along one axis of an (outer, n, inner) uint8 array, writing (outer, out_n, inner).
void resample_axis(const uint8_t* in, uint8_t* out, int64_t outer, int64_t n_in, int64_t inner,
                   const ResampleCoeffs& c, int64_t n_out, int64_t in_offset) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t xx = 0; xx < n_out; ++xx) {
      const int64_t xmin = c.bounds[xx * 2] + in_offset, count = c.bounds[xx * 2 + 1];
      const int32_t* w = &c.weights[xx * c.ksize];
      for (int64_t i = 0; i < inner; ++i) {
        int64_t acc = int64_t(1) << (kPrecisionBits - 1);
        for (int64_t x = 0; x < count; ++x) acc += int64_t(in[(o * n_in + xmin + x) * inner + i]) * w[x];
        out[(o * n_out + xx) * inner + i] = clip8(acc);
      }
    }
  }
}

}  // namespace

std::pair<int64_t, int64_t> get_preprocess_shape(int64_t old_h, int64_t old_w, int64_t long_side) {
  const double scale = double(long_side) * 1.0 / double(std::max(old_h, old_w));
  const double new_h = double(old_h) * scale, new_w = double(old_w) * scale;
  return {int64_t(new_h + 0.5), int64_t(new_w + 0.5)};
}

at::Tensor pil_resize_bilinear(const at::Tensor& image, int64_t new_h, int64_t new_w) {
  const at::Tensor src = image.contiguous();
  const int64_t h = src.size(0), w = src.size(1), ch = src.size(2);
  const bool need_h = new_w != w, need_v = new_h != h;
  const ResampleCoeffs horiz = precompute_coeffs(w, new_w);
  const ResampleCoeffs vert = precompute_coeffs(h, new_h);
  at::Tensor current = src;
  int64_t row_offset = 0;
  if (need_h) {
    // Pillow resamples only the rows the vertical pass will read.
    const int64_t first = need_v ? vert.bounds[0] : 0;
    const int64_t last = need_v ? vert.bounds[(new_h - 1) * 2] + vert.bounds[(new_h - 1) * 2 + 1] : h;
    at::Tensor temp = at::empty({last - first, new_w, ch}, at::kByte);
    resample_axis(src.data_ptr<uint8_t>() + first * w * ch, temp.data_ptr<uint8_t>(), last - first, w, ch, horiz,
                  new_w, 0);
    current = temp;
    row_offset = -first;
  }
  if (need_v) {
    at::Tensor out = at::empty({new_h, new_w, ch}, at::kByte);
    resample_axis(current.data_ptr<uint8_t>(), out.data_ptr<uint8_t>(), 1, current.size(0), new_w * ch, vert, new_h,
                  row_offset);
    current = out;
  }
  return need_h || need_v ? current : src.clone();
}

at::Tensor ResizeLongestSide::apply_image(const at::Tensor& image) const {
  const auto [h, w] = get_preprocess_shape(image.size(0), image.size(1), target_length_);
  return pil_resize_bilinear(image, h, w);
}

at::Tensor ResizeLongestSide::apply_coords(const at::Tensor& coords, std::pair<int64_t, int64_t> original_size) const {
  const auto [old_h, old_w] = original_size;
  const auto [new_h, new_w] = get_preprocess_shape(old_h, old_w, target_length_);
  at::Tensor c = coords.to(at::kDouble).clone();
  c.select(-1, 0).mul_(double(new_w) / double(old_w));
  c.select(-1, 1).mul_(double(new_h) / double(old_h));
  return c;
}

at::Tensor ResizeLongestSide::apply_boxes(const at::Tensor& boxes, std::pair<int64_t, int64_t> original_size) const {
  const auto shape = boxes.sizes().vec();
  return apply_coords(boxes.reshape({-1, 2, 2}), original_size).reshape(shape);
}

}  // namespace ptq4sam::sam
