#include "detect/keep_ratio_resize.h"

#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "util/error.h"

namespace ptq4sam::detect {

KeepRatioResized keep_ratio_resize(const at::Tensor& bgr, int64_t long_edge, int64_t short_edge, const std::string& who) {
  if (bgr.dim() != 3 || bgr.size(2) != 3 || bgr.scalar_type() != at::kByte || bgr.size(0) < 1 || bgr.size(1) < 1)
    throw Error(who, "image must be H x W x 3 uint8");
  const int64_t h = bgr.size(0), w = bgr.size(1);
  // mmcv.rescale_size in float64, as Python computes it.
  const double scale =
      std::min(double(long_edge) / double(std::max(h, w)), double(short_edge) / double(std::min(h, w)));
  const int64_t new_w = int64_t(double(w) * scale + 0.5), new_h = int64_t(double(h) * scale + 0.5);
  const int64_t bound = std::max(long_edge, short_edge);
  if (new_w < 1 || new_h < 1 || new_w > bound || new_h > bound)
    throw Error(who, "image of " + std::to_string(w) + " x " + std::to_string(h) + " cannot be resized to fit " +
                         std::to_string(long_edge) + " x " + std::to_string(short_edge));
  const at::Tensor contiguous = bgr.contiguous();
  const cv::Mat source(int(h), int(w), CV_8UC3, const_cast<uint8_t*>(contiguous.data_ptr<uint8_t>()));
  KeepRatioResized out;
  out.bgr = at::empty({new_h, new_w, 3}, at::kByte);
  cv::Mat resized(int(new_h), int(new_w), CV_8UC3, out.bgr.data_ptr<uint8_t>());
  cv::resize(source, resized, resized.size(), 0, 0, cv::INTER_LINEAR);
  const float w_scale = float(double(new_w) / double(w)), h_scale = float(double(new_h) / double(h));
  out.scale_factor = {w_scale, h_scale, w_scale, h_scale};
  return out;
}

}  // namespace ptq4sam::detect
