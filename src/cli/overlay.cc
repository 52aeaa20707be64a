#include "cli/overlay.h"

#include <opencv2/imgproc.hpp>

namespace ptq4sam::cli {

at::Tensor draw_overlay(const at::Tensor& image, const at::Tensor& masks, const std::vector<sam::Prompt>& prompts,
                        const std::vector<std::string>& captions) {
  static const cv::Vec3b palette[] = {{30, 144, 255}, {255, 99, 71}, {50, 205, 50}, {255, 215, 0},
                                      {186, 85, 211}, {0, 206, 209}, {255, 140, 0}, {199, 21, 133}};
  at::Tensor out = image.contiguous().clone();
  const int rows = int(out.size(0)), cols = int(out.size(1));
  cv::Mat canvas(rows, cols, CV_8UC3, out.data_ptr<uint8_t>());
  const at::Tensor m = masks.to(at::kByte).contiguous();
  for (int64_t i = 0; i < m.size(0); ++i) {
    const cv::Vec3b color = palette[i % 8];
    const uint8_t* mp = m[i].data_ptr<uint8_t>();
    for (int y = 0; y < rows; ++y) {
      cv::Vec3b* row = canvas.ptr<cv::Vec3b>(y);
      for (int x = 0; x < cols; ++x) {
        if (!mp[int64_t(y) * cols + x]) continue;
        for (int c = 0; c < 3; ++c) row[x][c] = uint8_t((int(row[x][c]) + int(color[c])) / 2);
      }
    }
  }
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
