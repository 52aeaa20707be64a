// `ptq4sam eval`: COCO instance segmentation with SAM prompted by boxes, resumable and shardable.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/overlay.h"
#include "cli/progress.h"
#include "coco/eval.h"
#include "eval/detections.h"
#include "eval/instance_seg.h"
#include "eval/journal.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "util/error.h"

namespace ptq4sam::cli {
namespace {

struct EvalOptions {
  std::string model, images, annotations, prompts, detector, out, shard, show_dir;
  double score_thr = -1;  // < 0: 0.05 with --detector (the seed's), 0 with --prompts
  float nms_iou = -1;  // < 0: the detector's own
  int placeholder = 0;  // > 0 on, < 0 off, 0: on with --detector (the seed's protocol), off with --prompts
  int max_dets = 0, limit = 0, threads = 0;
  quant::Backend backend = quant::Backend::kInteger;
};

// mmdetection's COCO evaluation (and so the seed's) sets maxDets to (100, 300, 1000).
const std::vector<int> kSeedMaxDets = {100, 300, 1000};

// Captions "<category name> <score>" for the overlay of one image's prompts.
std::vector<std::string> captions_of(const std::vector<eval::BoxPrompt>& boxes, const coco::Dataset& gt) {
  std::vector<std::string> captions;
  for (const auto& b : boxes) {
    const auto it = gt.category_index.find(b.category_id);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s %.2f",
                  it == gt.category_index.end() ? std::to_string(b.category_id).c_str() : gt.categories[it->second].name.c_str(),
                  b.score);
    captions.push_back(buf);
  }
  return captions;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  if (text.empty()) return {0, 1};
  const size_t slash = text.find('/');
  try {
    if (slash != std::string::npos) {
      const int64_t i = std::stoll(text.substr(0, slash)), n = std::stoll(text.substr(slash + 1));
      if (n >= 1 && i >= 0 && i < n) return {i, n};
    }
  } catch (const std::exception&) {
  }
  throw Error("--shard '" + text + "'", "expected I/N with 0 <= I < N");
}

int run_eval(const EvalOptions& o) {
  init_runtime(o.threads);
  const auto [shard_index, shard_count] = parse_shard(o.shard);
  if (o.prompts.empty() == o.detector.empty()) throw Error("eval", "give either --prompts or --detector");
  const coco::Dataset gt = coco::load_annotations(o.annotations);
  const bool with_detector = !o.detector.empty();
  const double score_thr = o.score_thr >= 0 ? o.score_thr : with_detector ? 0.05 : 0.0;
  const bool placeholder = o.placeholder == 0 ? with_detector : o.placeholder > 0;
  std::unordered_map<int64_t, std::vector<eval::BoxPrompt>> prompts;
  std::unique_ptr<detect::Detector> detector;
  std::vector<int64_t> category_ids;
  if (with_detector) {
    detector = detect::load_detector(o.detector, detect::detector_options(float(score_thr), o.nms_iou));
    category_ids = eval::detector_category_ids(detector->classes(), &gt);
    std::fprintf(stderr, "detector: %s\n", detector->describe().c_str());
  } else {
    prompts = eval::load_box_prompts(o.prompts, gt, {score_thr, o.max_dets > 0 ? o.max_dets : INT32_MAX});
  }

  std::vector<const coco::Image*> selection;
  for (size_t i = 0; i < gt.images.size(); ++i) {
    if (o.limit > 0 && i >= size_t(o.limit)) break;
    if (int64_t(i) % shard_count == shard_index) selection.push_back(&gt.images[i]);
  }
  if (selection.empty()) throw Error(o.annotations, "no images to evaluate (check --limit and --shard)");

  io::ensure_directory(o.out);
  if (!o.show_dir.empty()) io::ensure_directory(o.show_dir);
  std::error_code ec;
  const nlohmann::json run = {{"model", std::filesystem::absolute(o.model).string()},
                              {"model_bytes", std::filesystem::file_size(o.model, ec)},
                              {"annotations", std::filesystem::absolute(o.annotations).string()},
                              {"prompts", o.prompts == "gt" || o.prompts.empty() ? o.prompts : std::filesystem::absolute(o.prompts).string()},
                              {"detector", with_detector ? std::filesystem::absolute(o.detector).string() : ""},
                              {"nms_iou", with_detector ? detector->nms_iou() : 0.0f}, {"placeholder", placeholder},
                              {"backend", backend_name(o.backend)},
                              {"score_thr", score_thr}, {"max_dets", o.max_dets}, {"limit", o.limit},
                              {"shard", std::to_string(shard_index) + "/" + std::to_string(shard_count)}};
  eval::Journal journal(o.out + "/journal.jsonl", run);
  size_t already = 0;
  for (const auto* image : selection) already += journal.done(image->id);
  if (already > 0) std::fprintf(stderr, "resuming: %zu of %zu images already done\n", already, selection.size());

  LoadedModel loaded;
  std::shared_ptr<sam::Sam> model;
  std::unique_ptr<sam::Predictor> predictor;
  const Progress progress("eval", selection.size());
  size_t done = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const auto* image : selection) {
    if (journal.done(image->id)) continue;
    if (!model) {
      loaded = load_model(o.model, o.backend);
      model = loaded.sam;
      predictor = std::make_unique<sam::Predictor>(model);
      std::fprintf(stderr, "model: %s\n", model->config.describe().c_str());
    }
    const std::string path = o.images + "/" + image->file_name;
    // Read once: the detector takes OpenCV's BGR, SAM the RGB of the same pixels.
    const at::Tensor bgr = io::read_image_bgr(path);
    const at::Tensor pixels = io::swap_red_blue(bgr);
    if (pixels.size(0) != image->height || pixels.size(1) != image->width) {
      throw Error(path, "image is " + std::to_string(pixels.size(1)) + "x" + std::to_string(pixels.size(0)) +
                            " but the annotations say " + std::to_string(image->width) + "x" + std::to_string(image->height));
    }
    std::vector<eval::BoxPrompt> boxes;
    if (detector) {
      boxes = eval::prompts_from_detections(detector->detect(bgr), category_ids, {placeholder, o.max_dets});
    } else {
      const auto it = prompts.find(image->id);
      if (it != prompts.end()) boxes = it->second;
      if (boxes.empty() && placeholder && !gt.categories.empty()) boxes.push_back(eval::seed_placeholder(gt.categories[0].id));
    }
    const eval::ImageSegmentation seg = eval::segment_boxes(*predictor, pixels, image->id, boxes);
    journal.append(image->id, seg.results);
    if (!o.show_dir.empty()) {
      std::vector<sam::Prompt> drawn(boxes.size());
      for (size_t i = 0; i < boxes.size(); ++i) drawn[i].box = sam::Box{boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1};
      const std::string name = std::filesystem::path(image->file_name).stem().string() + ".png";
      io::write_png(o.show_dir + "/" + name, draw_overlay(pixels, seg.masks, drawn, captions_of(boxes, gt)));
    }
    progress.update(++done, already);
  }
  progress.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  nlohmann::json results = nlohmann::json::array();
  coco::EvalParams params;
  for (const auto* image : selection) {
    for (const auto& r : journal.entry(image->id)) results.push_back(r);
    params.image_ids.push_back(image->id);
  }
  const std::string results_path = o.out + "/results_segm.json";
  io::write_file_atomic(results_path, results.dump() + "\n");
  const auto dts = coco::load_results({results_path}, gt, coco::IouType::kSegm);
  const coco::EvalResult metrics = coco::evaluate(gt, dts, coco::IouType::kSegm, params);
  coco::EvalParams seed_params = params;
  seed_params.max_dets = kSeedMaxDets;
  const coco::EvalResult seed_metrics = coco::evaluate(gt, dts, coco::IouType::kSegm, seed_params);
  nlohmann::json metrics_file = metrics_json(coco::IouType::kSegm, metrics.stats);
  metrics_file["seed_protocol"] = metrics_json(coco::IouType::kSegm, seed_metrics.stats, kSeedMaxDets);
  io::write_file_atomic(o.out + "/metrics.json", metrics_file.dump(2) + "\n");
  std::printf("COCO standard (maxDets 1, 10, 100):\n%s", coco::summary_text(metrics.stats).c_str());
  std::printf("the seed's protocol (mmdetection's maxDets 100, 300, 1000):\n%s",
              coco::summary_text(seed_metrics.stats, kSeedMaxDets).c_str());
  // pycocotools takes the headline AP at 100 detections under both maxDets settings.
  std::printf("eval: %zu images (%zu this run, %.2f s/image), %zu masks; mask AP %.3f; results in %s\n",
              selection.size(), done, done ? seconds / double(done) : 0.0, results.size(), metrics.stats[0],
              o.out.c_str());
  return 0;
}

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "COCO instance segmentation with box prompts (mask AP)");
  cmd->footer(
      "Example:\n"
      "  ptq4sam eval --model sam_vit_b_01ec64.pth --images val2017 --annotations instances_val2017.json \\\n"
      "      --prompts dino_val2017_bbox.json --out runs/vit_b --shard 0/4\n"
      "  ptq4sam eval --model sam_vit_l_0b3195.pth --detector yolox_l.pth --images val2017 \\\n"
      "      --annotations instances_val2017.json --out runs/yolox_vit_l\n"
      "metrics.json holds COCO's standard summary (maxDets 1, 10, 100) and, as seed_protocol, mmdetection's\n"
      "(maxDets 100, 300, 1000), which the PTQ4SAM paper reports.\n"
      "Killed runs resume from DIR/journal.jsonl when started again with the same arguments;\n"
      "combine shards with: ptq4sam coco-eval --annotations A --results runs/*/results_segm.json");
  cmd->add_option("--model", o->model, "SAM checkpoint (.pth) or quantized artifact (.safetensors from 'ptq4sam quantize')")->required();
  cmd->add_option("--images", o->images, "Image folder (file_name of the annotations is relative to it)")->required();
  cmd->add_option("--annotations", o->annotations, "COCO ground truth (instances_*.json)")->required();
  cmd->add_option("--prompts", o->prompts, "Detections (COCO results JSON with bbox and score) or 'gt'");
  cmd->add_option("--detector", o->detector,
                  "Run a detector (YOLOX in mmdetection's or Megvii's layout, Faster R-CNN in mmdetection's) on each image "
                  "for the prompts, "
                  "as the seed does; instead of --prompts");
  cmd->add_option("--out", o->out, "Output folder: results_segm.json, metrics.json, journal.jsonl")->required();
  cmd->add_option("--score-thr", o->score_thr,
                  "Drop detections scoring below (default: 0.05 with --detector, the seed's; 0 with --prompts)");
  cmd->add_option("--nms-iou", o->nms_iou, "The detector's class-wise NMS IoU (default: YOLOX 0.65, Faster R-CNN 0.5)");
  cmd->add_option("--max-dets", o->max_dets, "Boxes per image, best first (0: all, as the seed passes them)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--placeholder-box,!--no-placeholder-box", o->placeholder,
                "On an image without detections, prompt SAM with the seed's box [0, 0, 0, 0] (score 0.1, first "
                "category) (default: on with --detector, off with --prompts)");
  cmd->add_option("--limit", o->limit, "Only the first N images of the annotations");
  cmd->add_option("--shard", o->shard, "I/N: evaluate images I, I+N, I+2N, ...");
  cmd->add_option("--show-dir", o->show_dir, "Write an overlay PNG per image here");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  add_backend_option(*cmd, o->backend);
  return [o]() { return run_eval(*o); };
}

}  // namespace ptq4sam::cli
