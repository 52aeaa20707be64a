#include "cli/overlay.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace ptq4sam::cli {
namespace {

// Half the pixel, half the colour, where the row-major mask is set.
void tint(cv::Mat& canvas, const uint8_t* mask, const cv::Vec3b& color) {
  for (int y = 0; y < canvas.rows; ++y) {
    cv::Vec3b* row = canvas.ptr<cv::Vec3b>(y);
    const uint8_t* m = mask + int64_t(y) * canvas.cols;
    for (int x = 0; x < canvas.cols; ++x) {
      if (!m[x]) continue;
      for (int c = 0; c < 3; ++c) row[x][c] = uint8_t((int(row[x][c]) + int(color[c])) / 2);
    }
  }
}

}  // namespace

at::Tensor draw_mask_overlay(const at::Tensor& image, const std::vector<const coco::Rle*>& masks) {
  at::Tensor out = image.contiguous().clone();
  cv::Mat canvas(int(out.size(0)), int(out.size(1)), CV_8UC3, out.data_ptr<uint8_t>());
  std::vector<size_t> order(masks.size());
  std::vector<uint64_t> areas(masks.size());
  for (size_t i = 0; i < order.size(); ++i) {
    order[i] = i;
    areas[i] = coco::area(*masks[i]);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return areas[a] > areas[b]; });
  for (const size_t i : order) {
    // A colour per mask from its index (golden-ratio hue steps), bright enough to see.
    const double hue = std::fmod(double(i) * 0.618033988749895, 1.0) * 180.0;
    cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(hue, 200, 255)), rgb;
    cv::cvtColor(hsv, rgb, cv::COLOR_HSV2RGB);
    tint(canvas, coco::decode(*masks[i]).data(), rgb.at<cv::Vec3b>(0, 0));
  }
  return out;
}

at::Tensor draw_overlay(const at::Tensor& image, const at::Tensor& masks, const std::vector<sam::Prompt>& prompts,
                        const std::vector<std::string>& captions) {
  static const cv::Vec3b palette[] = {{30, 144, 255}, {255, 99, 71}, {50, 205, 50}, {255, 215, 0},
                                      {186, 85, 211}, {0, 206, 209}, {255, 140, 0}, {199, 21, 133}};
  at::Tensor out = image.contiguous().clone();
  const int rows = int(out.size(0)), cols = int(out.size(1));
  cv::Mat canvas(rows, cols, CV_8UC3, out.data_ptr<uint8_t>());
  const at::Tensor m = masks.to(at::kByte).contiguous();
  for (int64_t i = 0; i < m.size(0); ++i) tint(canvas, m[i].data_ptr<uint8_t>(), palette[i % 8]);
  const int thickness = std::max(1, std::max(rows, cols) / 400);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& prompt = prompts[i];
    if (prompt.box) {
      const cv::Point corner(int(prompt.box->x0), int(prompt.box->y0));
      cv::rectangle(canvas, corner, cv::Point(int(prompt.box->x1), int(prompt.box->y1)), cv::Scalar(0, 255, 0),
                    thickness * 2);
      if (i < captions.size() && !captions[i].empty()) {
        const double scale = 0.4 * thickness;
        int baseline = 0;
        const cv::Size text = cv::getTextSize(captions[i], cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &baseline);
        const cv::Point origin(std::clamp(corner.x, 0, std::max(0, cols - text.width)),
                               std::clamp(corner.y - 2, text.height + 2, std::max(text.height + 2, rows - 2)));
        cv::rectangle(canvas, origin + cv::Point(0, baseline), origin + cv::Point(text.width, -text.height - 2),
                      cv::Scalar(0, 128, 0), cv::FILLED);
        cv::putText(canvas, captions[i], origin, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(255, 255, 255), thickness);
      }
    }
    for (const auto& p : prompt.points) {
      const cv::Scalar color = p.label == 1 ? cv::Scalar(0, 255, 0) : cv::Scalar(255, 0, 0);
      cv::circle(canvas, cv::Point(int(p.x), int(p.y)), thickness * 5, color, cv::FILLED);
      cv::circle(canvas, cv::Point(int(p.x), int(p.y)), thickness * 5, cv::Scalar(255, 255, 255), thickness);
    }
  }
  return out;
}

}  // namespace ptq4sam::cli
