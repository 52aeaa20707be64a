// `ptq4sam everything`: segment everything in one image, as the official
// SamAutomaticMaskGenerator, on an FP32 checkpoint or a quantized artifact.
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/overlay.h"
#include "cli/progress.h"
#include "eval/automatic_mask_generator.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "sam/predictor.h"

namespace ptq4sam::cli {
namespace {

struct EverythingOptions {
  std::string model, image, out_dir;
  bool png = false;
  int threads = 0;
  quant::Backend backend = quant::Backend::kInteger;
  eval::AmgOptions amg;
};

nlohmann::json xywh(const eval::AmgBox& b) {
  return {double(b[0]), double(b[1]), double(b[2] - b[0]), double(b[3] - b[1])};
}

// The official generator's record, output_mode="coco_rle".
nlohmann::json record(const eval::AmgMask& m) {
  return {{"segmentation", {{"size", {m.segmentation.h, m.segmentation.w}}, {"counts", coco::to_string(m.segmentation)}}},
          {"area", m.area},
          {"bbox", xywh(m.box)},
          {"predicted_iou", double(m.predicted_iou)},
          {"point_coords", {{m.point_x, m.point_y}}},
          {"stability_score", double(m.stability_score)},
          {"crop_box", xywh(m.crop_box)}};
}

int run_everything(const EverythingOptions& o) {
  eval::check_options(o.amg);
  init_runtime(o.threads);
  const auto start = std::chrono::steady_clock::now();
  const LoadedModel loaded = load_model(o.model, o.backend);
  std::fprintf(stderr, "model: %s\n", loaded.sam->config.describe().c_str());
  const at::Tensor image = io::read_image_rgb(o.image);
  sam::Predictor predictor(loaded.sam);
  std::unique_ptr<Progress> bar;
  const auto t_generate = std::chrono::steady_clock::now();
  const auto masks = eval::generate_masks(predictor, image, o.amg, [&](size_t done, size_t total) {
    if (!bar) bar = std::make_unique<Progress>("everything", total, "batch");
    bar->update(done);
    if (done == total) bar->finish();
  });
  const double generate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_generate).count();

  io::ensure_directory(o.out_dir);
  nlohmann::json records = nlohmann::json::array();
  std::vector<const coco::Rle*> rles;
  for (size_t i = 0; i < masks.size(); ++i) {
    records.push_back(record(masks[i]));
    rles.push_back(&masks[i].segmentation);
    if (o.png) {
      const std::vector<uint8_t> pixels = coco::decode(masks[i].segmentation);
      const at::Tensor mask = at::from_blob(const_cast<uint8_t*>(pixels.data()), {image.size(0), image.size(1)}, at::kByte);
      io::write_png(o.out_dir + "/mask_" + std::to_string(i) + ".png", mask * 255);
    }
  }
  io::write_file_atomic(o.out_dir + "/masks.json", records.dump() + "\n");
  io::write_png(o.out_dir + "/overlay.png", draw_mask_overlay(image, rles));
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%zu masks written to %s/masks.json (%lld points per side, %lld crop layers): %.2f s generating, %.2f s in all\n",
              masks.size(), o.out_dir.c_str(), static_cast<long long>(o.amg.points_per_side),
              static_cast<long long>(o.amg.crop_n_layers), generate_s, total_s);
  return 0;
}

}  // namespace

Runner add_everything_command(CLI::App& app) {
  auto o = std::make_shared<EverythingOptions>();
  CLI::App* cmd = app.add_subcommand("everything", "Segment everything: the official automatic mask generator");
  cmd->footer(
      "Example:\n"
      "  ptq4sam everything --model sam_vit_b_01ec64.pth --image photo.jpg --out out/\n"
      "  writes out/masks.json (the official records: segmentation as COCO RLE, area, bbox XYWH,\n"
      "  predicted_iou, point_coords, stability_score, crop_box) and out/overlay.png");
  cmd->add_option("--model", o->model, "Official SAM checkpoint (.pth) or quantized artifact (.safetensors)")->required();
  cmd->add_option("--image", o->image, "Input image (PNG or JPEG)")->required();
  cmd->add_option("--out", o->out_dir, "Output directory")->required();
  auto& a = o->amg;
  cmd->add_option("--points-per-side", a.points_per_side, "Points along each side of the grid")->capture_default_str();
  cmd->add_option("--points-per-batch", a.points_per_batch, "Points decoded together")->capture_default_str();
  cmd->add_option("--pred-iou-thresh", a.pred_iou_thresh, "Keep masks whose predicted IoU is above this (<= 0: all)")
      ->capture_default_str();
  cmd->add_option("--stability-score-thresh", a.stability_score_thresh, "Keep masks at least this stable (0: all)")
      ->capture_default_str();
  cmd->add_option("--stability-score-offset", a.stability_score_offset, "Logit offset of the stability score")
      ->capture_default_str();
  cmd->add_option("--box-nms-thresh", a.box_nms_thresh, "Box IoU above which a crop's duplicate masks go")
      ->capture_default_str();
  cmd->add_option("--crop-n-layers", a.crop_n_layers, "Crop layers (layer i: (2^i)^2 crops)")->capture_default_str();
  cmd->add_option("--crop-nms-thresh", a.crop_nms_thresh, "Box IoU above which duplicates between crops go")
      ->capture_default_str();
  cmd->add_option("--crop-overlap-ratio", a.crop_overlap_ratio, "Crops' overlap in the first layer, of the short side")
      ->capture_default_str();
  cmd->add_option("--crop-n-points-downscale-factor", a.crop_n_points_downscale_factor,
                  "Points per side in layer i: points-per-side / factor^i")
      ->capture_default_str();
  cmd->add_option("--min-mask-region-area", a.min_mask_region_area,
                  "Fill holes and drop islands smaller than this many pixels (0: off)")
      ->capture_default_str();
  cmd->add_flag("--png", o->png, "Also write each mask as mask_<i>.png");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  add_backend_option(*cmd, o->backend);
  return [o]() { return run_everything(*o); };
}

}  // namespace ptq4sam::cli
