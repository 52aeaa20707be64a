// COCOeval speed: a generated set of N images with K ground truths and D detections each
// (polygon ground truth, RLE detections), written as COCO JSON, then loaded and evaluated.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "coco/eval.h"
#include "io/atomic_file.h"

using namespace ptq4sam;
using nlohmann::json;

namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_coco_eval: pycocotools-equivalent evaluation speed"};
  int images = 5000, gts = 7, dets = 100, threads = 2;
  std::string type_name = "segm";
  app.add_option("--images", images, "Images")->capture_default_str();
  app.add_option("--gts", gts, "Ground-truth objects per image")->capture_default_str();
  app.add_option("--dets", dets, "Detections per image")->capture_default_str();
  app.add_option("--iou-type", type_name, "segm or bbox")->capture_default_str();
  app.add_option("--threads", threads, "Threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  cli::init_runtime(threads);
  const coco::IouType type = coco::parse_iou_type(type_name);

  std::mt19937 rng(0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int width = 640, height = 480, categories = 5;
  json gt = {{"images", json::array()}, {"annotations", json::array()}, {"categories", json::array()}};
  for (int c = 1; c <= categories; ++c) gt["categories"].push_back({{"id", c}, {"name", "c" + std::to_string(c)}});
  json results = json::array();
  int64_t ann_id = 1;
  for (int i = 1; i <= images; ++i) {
    gt["images"].push_back({{"id", i}, {"width", width}, {"height", height}, {"file_name", std::to_string(i) + ".jpg"}});
    std::vector<std::array<double, 5>> objects;  // x, y, w, h, category
    for (int g = 0; g < gts; ++g) {
      const double w = 8 + unit(rng) * 200, h = 8 + unit(rng) * 200;
      const double x = unit(rng) * (width - w), y = unit(rng) * (height - h);
      const double cat = 1 + int(unit(rng) * categories);
      objects.push_back({x, y, w, h, cat});
      gt["annotations"].push_back({{"id", ann_id++}, {"image_id", i}, {"category_id", int(cat)},
                                   {"segmentation", json::array({json::array({x, y, x + w, y, x + w, y + h, x, y + h})})},
                                   {"area", w * h}, {"bbox", {x, y, w, h}}, {"iscrowd", 0}});
    }
    for (int d = 0; d < dets; ++d) {
      const auto& o = objects[size_t(d) % objects.size()];
      const double jx = (unit(rng) - 0.5) * 0.3 * o[2], jy = (unit(rng) - 0.5) * 0.3 * o[3];
      const double x = std::clamp(o[0] + jx, 0.0, width - 2.0), y = std::clamp(o[1] + jy, 0.0, height - 2.0);
      const double w = std::min(o[2], width - x), h = std::min(o[3], height - y);
      const int cat = unit(rng) < 0.8 ? int(o[4]) : 1 + int(unit(rng) * categories);
      json r = {{"image_id", i}, {"category_id", cat}, {"score", unit(rng)}};
      if (type == coco::IouType::kBbox) {
        r["bbox"] = {x, y, w, h};
      } else {
        const double box[4] = {x, y, w, h};
        r["segmentation"] = {{"size", {height, width}}, {"counts", coco::to_string(coco::from_bbox(box, height, width))}};
      }
      results.push_back(std::move(r));
    }
  }
  const std::string dir = (std::filesystem::temp_directory_path() / "ptq4sam_bench_coco").string();
  io::ensure_directory(dir);
  io::write_file_atomic(dir + "/instances.json", gt.dump());
  io::write_file_atomic(dir + "/results.json", results.dump());
  std::printf("generated %d images, %d ground truths and %d detections each (%s) in %s\n", images, gts, dets,
              type_name.c_str(), dir.c_str());

  auto t = std::chrono::steady_clock::now();
  const coco::Dataset dataset = coco::load_annotations(dir + "/instances.json");
  const auto dts = coco::load_results({dir + "/results.json"}, dataset, type);
  const double load_s = since(t);
  t = std::chrono::steady_clock::now();
  const coco::EvalResult r = coco::evaluate(dataset, dts, type);
  const double eval_s = since(t);
  std::printf("%s", coco::summary_text(r.stats).c_str());
  std::printf("load %.2f s, evaluate %.2f s, total %.2f s (%zu detections)\n", load_s, eval_s, load_s + eval_s, dts.size());
  std::filesystem::remove_all(dir);
  return 0;
}
