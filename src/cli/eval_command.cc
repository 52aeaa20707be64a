// `ptq4sam eval`: COCO instance segmentation with SAM prompted by boxes, resumable and shardable.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/overlay.h"
#include "cli/progress.h"
#include "coco/eval.h"
#include "eval/instance_seg.h"
#include "eval/journal.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "util/error.h"

namespace ptq4sam::cli {
namespace {

struct EvalOptions {
  std::string model, images, annotations, prompts, out, shard, show_dir;
  double score_thr = 0.0;
  int max_dets = 100, limit = 0, threads = 0;
  quant::Backend backend = quant::Backend::kInteger;
};

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
  const coco::Dataset gt = coco::load_annotations(o.annotations);
  const auto prompts = eval::load_box_prompts(o.prompts, gt, {o.score_thr, o.max_dets});

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
                              {"prompts", o.prompts == "gt" ? o.prompts : std::filesystem::absolute(o.prompts).string()},
                              {"backend", backend_name(o.backend)},
                              {"score_thr", o.score_thr}, {"max_dets", o.max_dets}, {"limit", o.limit},
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
    const at::Tensor pixels = io::read_image_rgb(path);
    if (pixels.size(0) != image->height || pixels.size(1) != image->width) {
      throw Error(path, "image is " + std::to_string(pixels.size(1)) + "x" + std::to_string(pixels.size(0)) +
                            " but the annotations say " + std::to_string(image->width) + "x" + std::to_string(image->height));
    }
    const auto it = prompts.find(image->id);
    const std::vector<eval::BoxPrompt> boxes = it == prompts.end() ? std::vector<eval::BoxPrompt>() : it->second;
    const eval::ImageSegmentation seg = eval::segment_boxes(*predictor, pixels, image->id, boxes);
    journal.append(image->id, seg.results);
    if (!o.show_dir.empty()) {
      std::vector<sam::Prompt> drawn(boxes.size());
      for (size_t i = 0; i < boxes.size(); ++i) drawn[i].box = sam::Box{boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1};
      const std::string name = std::filesystem::path(image->file_name).stem().string() + ".png";
      io::write_png(o.show_dir + "/" + name, draw_overlay(pixels, seg.masks, drawn));
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
  io::write_file_atomic(o.out + "/metrics.json", metrics_json(coco::IouType::kSegm, metrics.stats).dump(2) + "\n");
  std::printf("%s", coco::summary_text(metrics.stats).c_str());
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
      "Killed runs resume from DIR/journal.jsonl when started again with the same arguments;\n"
      "combine shards with: ptq4sam coco-eval --annotations A --results runs/*/results_segm.json");
  cmd->add_option("--model", o->model, "SAM checkpoint (.pth) or quantized artifact (.safetensors from 'ptq4sam quantize')")->required();
  cmd->add_option("--images", o->images, "Image folder (file_name of the annotations is relative to it)")->required();
  cmd->add_option("--annotations", o->annotations, "COCO ground truth (instances_*.json)")->required();
  cmd->add_option("--prompts", o->prompts, "Detections (COCO results JSON with bbox and score) or 'gt'")->required();
  cmd->add_option("--out", o->out, "Output folder: results_segm.json, metrics.json, journal.jsonl")->required();
  cmd->add_option("--score-thr", o->score_thr, "Drop detections scoring below")->capture_default_str();
  cmd->add_option("--max-dets", o->max_dets, "Boxes per image, best first")->capture_default_str();
  cmd->add_option("--limit", o->limit, "Only the first N images of the annotations");
  cmd->add_option("--shard", o->shard, "I/N: evaluate images I, I+N, I+2N, ...");
  cmd->add_option("--show-dir", o->show_dir, "Write an overlay PNG per image here");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  add_backend_option(*cmd, o->backend);
  return [o]() { return run_eval(*o); };
}

}  // namespace ptq4sam::cli
