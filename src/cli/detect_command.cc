// `ptq4sam detect`: a detector's boxes for a folder of images as a COCO results file (bbox),
// resumable, as the seed's detectors produce SAM's prompts.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/overlay.h"
#include "cli/progress.h"
#include "eval/detections.h"
#include "eval/journal.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "util/error.h"

namespace ptq4sam::cli {
namespace {

struct DetectOptions {
  std::string detector, images, annotations, out, show_dir;
  float score_thr = -1, nms_iou = -1;  // < 0: the detector's own (the seed's test_cfg)
  int limit = 0, threads = 0;
};

// Captions "<class> <score>" for drawn boxes.
std::vector<std::string> captions_of(const std::vector<detect::Detection>& dets, const detect::Detector& detector) {
  std::vector<std::string> captions;
  for (const auto& d : dets) {
    char buf[96];
    const std::string name = size_t(d.label) < detector.classes().size() ? detector.classes()[size_t(d.label)] : "?";
    std::snprintf(buf, sizeof buf, "%s %.2f", name.c_str(), d.score);
    captions.push_back(buf);
  }
  return captions;
}

int run_detect(const DetectOptions& o) {
  init_runtime(o.threads);
  std::optional<coco::Dataset> gt;
  std::vector<coco::Image> images;
  if (!o.annotations.empty()) {
    gt = coco::load_annotations(o.annotations);
    images = gt->images;
  } else {
    images = eval::numbered_images(o.images);
  }
  if (o.limit > 0 && images.size() > size_t(o.limit)) images.resize(size_t(o.limit));
  if (images.empty()) throw Error(o.images, "no images to detect on (numbered files such as 000000397133.jpg)");

  const std::unique_ptr<detect::Detector> detector = detect::load_detector(o.detector, detect::detector_options(o.score_thr, o.nms_iou));
  std::fprintf(stderr, "detector: %s\n", detector->describe().c_str());
  const std::vector<int64_t> category_ids = eval::detector_category_ids(detector->classes(), gt ? &*gt : nullptr);
  if (!o.show_dir.empty()) io::ensure_directory(o.show_dir);
  const std::filesystem::path out_dir = std::filesystem::path(o.out).parent_path();
  if (!out_dir.empty()) io::ensure_directory(out_dir.string());

  std::error_code ec;
  const nlohmann::json run = {{"detector", std::filesystem::absolute(o.detector).string()},
                              {"detector_bytes", std::filesystem::file_size(o.detector, ec)},
                              {"images", std::filesystem::absolute(o.images).string()},
                              {"annotations", o.annotations.empty() ? "" : std::filesystem::absolute(o.annotations).string()},
                              {"score_thr", detector->score_threshold()}, {"nms_iou", detector->nms_iou()},
                              {"limit", o.limit}};
  eval::Journal journal(o.out + ".journal.jsonl", run);
  size_t already = 0;
  for (const auto& image : images) already += journal.done(image.id);
  if (already > 0) std::fprintf(stderr, "resuming: %zu of %zu images already done\n", already, images.size());

  const Progress progress("detect", images.size());
  size_t done = 0, boxes = 0;
  double seconds = 0;
  for (const auto& image : images) {
    if (journal.done(image.id)) continue;
    const std::string path = o.images + "/" + image.file_name;
    const at::Tensor bgr = io::read_image_bgr(path);
    const auto start = std::chrono::steady_clock::now();
    const std::vector<detect::Detection> dets = detector->detect(bgr);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    journal.append(image.id, eval::detections_json(image.id, dets, category_ids));
    if (!o.show_dir.empty()) {
      std::vector<sam::Prompt> drawn(dets.size());
      for (size_t i = 0; i < dets.size(); ++i) drawn[i].box = sam::Box{dets[i].box.x0, dets[i].box.y0, dets[i].box.x1, dets[i].box.y1};
      const std::string name = std::filesystem::path(image.file_name).stem().string() + ".png";
      io::write_png(o.show_dir + "/" + name,
                    draw_overlay(io::swap_red_blue(bgr), at::zeros({0, bgr.size(0), bgr.size(1)}, at::kBool), drawn,
                                 captions_of(dets, *detector)));
    }
    boxes += dets.size();
    progress.update(++done, already);
  }
  progress.finish();

  nlohmann::json results = nlohmann::json::array();
  for (const auto& image : images)
    for (const auto& r : journal.entry(image.id)) results.push_back(r);
  io::write_file_atomic(o.out, results.dump() + "\n");
  std::printf("detect: %zu images (%zu this run, %.3f s/image in the detector), %zu boxes in all; %s\n", images.size(),
              done, done ? seconds / double(done) : 0.0, results.size(), o.out.c_str());
  return 0;
}

}  // namespace

Runner add_detect_command(CLI::App& app) {
  auto o = std::make_shared<DetectOptions>();
  CLI::App* cmd = app.add_subcommand("detect", "Detect boxes with a seed detector (YOLOX, Faster R-CNN) into COCO results JSON");
  cmd->footer(
      "Example:\n"
      "  ptq4sam detect --detector yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth --images val2017 \\\n"
      "      --annotations instances_val2017.json --out yolox_val2017_bbox.json\n"
      "Checkpoints: mmdetection's model zoo files (legacy torch.save) of YOLOX or Faster R-CNN R50-FPN,\n"
      "or Megvii's yolox_*.pth; which detector it is comes from the checkpoint's keys.\n"
      "A killed run resumes from OUT.journal.jsonl when started again with the same arguments.");
  cmd->add_option("--detector", o->detector, "Detector checkpoint (YOLOX in mmdetection's or Megvii's layout, Faster R-CNN in mmdetection's)")->required();
  cmd->add_option("--images", o->images, "Image folder")->required();
  cmd->add_option("--annotations", o->annotations,
                  "COCO annotations: their images, in their order, and their category ids (by class name); "
                  "without it, the folder's numbered files and COCO's 80-class ids");
  cmd->add_option("--out", o->out, "Output: COCO results JSON (bbox, score)")->required();
  cmd->add_option("--score-thr", o->score_thr,
                  "Score threshold (default: the seed's 0.05 for both; YOLOX keeps >=, Faster R-CNN >; "
                  "mmdetection's YOLOX config: 0.01)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--nms-iou", o->nms_iou, "Class-wise NMS IoU threshold (default: YOLOX 0.65, Faster R-CNN 0.5)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--limit", o->limit, "Only the first N images");
  cmd->add_option("--show-dir", o->show_dir, "Write a PNG per image with the boxes, classes and scores");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  return [o]() { return run_detect(*o); };
}

}  // namespace ptq4sam::cli
