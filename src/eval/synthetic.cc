#include "eval/synthetic.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <random>

#include "coco/rle.h"
#include "io/atomic_file.h"
#include "io/image.h"

namespace ptq4sam::eval {
namespace {

using nlohmann::json;

struct Shape {
  int category;  // 1 rectangle, 2 ellipse, 3 triangle
  std::vector<cv::Point2d> polygon;
  cv::Rect2d box;
};

std::vector<cv::Point2d> make_polygon(int category, const cv::Rect2d& r, std::mt19937& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  if (category == 1) return {{r.x, r.y}, {r.x + r.width, r.y}, {r.x + r.width, r.y + r.height}, {r.x, r.y + r.height}};
  if (category == 2) {
    std::vector<cv::Point2d> p;
    for (int i = 0; i < 32; ++i) {
      const double t = 2 * M_PI * i / 32;
      p.emplace_back(r.x + r.width * (0.5 + 0.5 * std::cos(t)), r.y + r.height * (0.5 + 0.5 * std::sin(t)));
    }
    return p;
  }
  return {{r.x + r.width * unit(rng), r.y}, {r.x + r.width, r.y + r.height}, {r.x, r.y + r.height}};
}

}  // namespace

std::string write_synthetic_coco(const std::string& dir, const SyntheticOptions& o) {
  io::ensure_directory(dir + "/images");
  std::mt19937 rng(uint32_t(o.seed));
  std::uniform_real_distribution<double> unit(0, 1);
  json gt = {{"info", {{"description", "ptq4sam synthetic scenes"}}},
             {"images", json::array()}, {"annotations", json::array()},
             {"categories", {{{"id", 1}, {"name", "rectangle"}}, {{"id", 2}, {"name", "ellipse"}}, {{"id", 3}, {"name", "triangle"}}}}};
  json detections = json::array();
  int64_t ann_id = 1;
  size_t objects = 0;
  for (int i = 1; i <= o.images; ++i) {
    const int w = o.min_side + int(unit(rng) * (o.max_side - o.min_side)), h = o.min_side + int(unit(rng) * (o.max_side - o.min_side));
    // Background: a colour gradient with noise texture.
    cv::Mat img(h, w, CV_8UC3);
    const cv::Vec3d c0(unit(rng) * 255, unit(rng) * 255, unit(rng) * 255), c1(unit(rng) * 255, unit(rng) * 255, unit(rng) * 255);
    std::normal_distribution<double> noise(0, 12);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const double t = (double(x) / w + double(y) / h) / 2;
        for (int c = 0; c < 3; ++c) img.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uchar>(c0[c] * (1 - t) + c1[c] * t + noise(rng));
      }
    // Non-overlapping shapes, so that every annotation is the whole visible object.
    std::vector<Shape> shapes;
    const int wanted = 2 + int(unit(rng) * 5);
    for (int attempt = 0; attempt < 100 && int(shapes.size()) < wanted; ++attempt) {
      const double sw = 20 + unit(rng) * w * 0.35, sh = 20 + unit(rng) * h * 0.35;
      const cv::Rect2d r(unit(rng) * (w - sw - 1), unit(rng) * (h - sh - 1), sw, sh);
      bool overlaps = false;
      for (const auto& s : shapes) overlaps = overlaps || (s.box & r).area() > 0;
      if (overlaps) continue;
      const int category = 1 + int(unit(rng) * 3);
      Shape s{category, make_polygon(category, r, rng), r};
      std::vector<cv::Point> pts;
      for (const auto& p : s.polygon) pts.emplace_back(int(std::lround(p.x)), int(std::lround(p.y)));
      const cv::Scalar color(unit(rng) * 255, unit(rng) * 255, unit(rng) * 255);
      cv::fillPoly(img, std::vector<std::vector<cv::Point>>{pts}, color);
      shapes.push_back(std::move(s));
    }
    const std::string file = "synth_" + std::to_string(100000 + i).substr(1) + ".png";
    cv::Mat rgb;
    cv::cvtColor(img, rgb, cv::COLOR_BGR2RGB);
    at::Tensor pixels = at::from_blob(rgb.data, {h, w, 3}, at::kByte).clone();
    io::write_png(dir + "/images/" + file, pixels);
    gt["images"].push_back({{"id", i}, {"file_name", file}, {"height", h}, {"width", w}});
    for (const auto& s : shapes) {
      std::vector<double> xy;
      double x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
      for (const auto& p : s.polygon) {
        xy.push_back(p.x);
        xy.push_back(p.y);
        x0 = std::min(x0, p.x), y0 = std::min(y0, p.y), x1 = std::max(x1, p.x), y1 = std::max(y1, p.y);
      }
      const double area = double(coco::area(coco::from_polygon(xy, h, w)));
      gt["annotations"].push_back({{"id", ann_id++}, {"image_id", i}, {"category_id", s.category},
                                   {"segmentation", json::array({xy})}, {"area", area},
                                   {"bbox", {x0, y0, x1 - x0, y1 - y0}}, {"iscrowd", 0}});
      ++objects;
      // A detector's view: jittered box, mostly the right class.
      const double bw = x1 - x0, bh = y1 - y0;
      const double dx = (unit(rng) - 0.5) * 0.2 * bw, dy = (unit(rng) - 0.5) * 0.2 * bh;
      const int cat = unit(rng) < 0.85 ? s.category : 1 + int(unit(rng) * 3);
      detections.push_back({{"image_id", i}, {"category_id", cat}, {"score", 0.5 + 0.5 * unit(rng)},
                            {"bbox", {x0 + dx, y0 + dy, bw * (0.9 + 0.2 * unit(rng)), bh * (0.9 + 0.2 * unit(rng))}}});
    }
    // False positives with low scores.
    for (int k = 0; k < 2; ++k) {
      const double bw = 20 + unit(rng) * w * 0.2, bh = 20 + unit(rng) * h * 0.2;
      detections.push_back({{"image_id", i}, {"category_id", 1 + int(unit(rng) * 3)}, {"score", 0.3 * unit(rng)},
                            {"bbox", {unit(rng) * (w - bw), unit(rng) * (h - bh), bw, bh}}});
    }
  }
  io::write_file_atomic(dir + "/instances.json", gt.dump() + "\n");
  io::write_file_atomic(dir + "/detections.json", detections.dump() + "\n");
  return std::to_string(o.images) + " images, " + std::to_string(objects) + " objects, " +
         std::to_string(detections.size()) + " detections in " + dir;
}

}  // namespace ptq4sam::eval
