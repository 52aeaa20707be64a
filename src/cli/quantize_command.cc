// `ptq4sam quantize`: PTQ4SAM-S (calibration) of an official checkpoint, then PTQ4SAM-L (QDrop
// block reconstruction) when the config has a `recon` section, into a self-contained quantized
// artifact, with an optional per-quantizer report.
#include <algorithm>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "cli/commands.h"
#include "cli/progress.h"
#include "detect/detector.h"
#include "eval/detections.h"
#include "eval/prompts.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "quant/artifact.h"
#include "quant/calibrate.h"
#include "quant/reconstruct.h"
#include "util/error.h"

namespace ptq4sam::cli {
namespace {

struct QuantizeOptions {
  std::string model, config, calib_images, calib_annotations, calib_prompts, calib_detector, out, report;
  int calib_count = 0;  // 0: the config's `calibrate`
  bool quant_encoder = false;
  int threads = 0;
  bool no_recon = false;
  uint64_t seed = 0;
  std::string device = "cpu";
  int recon_iters = -1;  // -1: the config's recon.iters
  bool recon_keep_worse = false;
  std::string recon_checkpoint;  // "": <out>.recon.safetensors
};

// What a reconstruction checkpoint must have been written by: the same model file, config,
// seed, iterations and calibration images.
std::string run_fingerprint(const QuantizeOptions& o, const quant::QuantConfig& config, const std::vector<std::string>& samples) {
  std::error_code ec;
  std::string text = std::filesystem::absolute(o.model, ec).string() + "|" +
                     std::to_string(std::filesystem::file_size(o.model, ec)) + "|" + config.source + "|" +
                     std::to_string(o.seed) + "|" + std::to_string(config.recon->iters) + "|" +
                     (o.quant_encoder ? "encoder" : "decoder") + (o.recon_keep_worse ? "|keep-worse" : "");
  for (const auto& s : samples) text += "|" + s;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(std::hash<std::string>{}(text)));
  return hex;
}

// One line, redrawn: "recon [3/9] <block> train 120/200 rec 0.0123 round 4.56 b 12.3 ETA 00:01:10".
class ReconLine {
 public:
  void operator()(const quant::ReconStatus& s) {
    const auto now = std::chrono::steady_clock::now();
    if (s.name != block_ || s.stage != stage_) {
      block_ = s.name;
      stage_ = s.stage;
      stage_start_ = now;
    }
    const double elapsed = std::chrono::duration<double>(now - stage_start_).count();
    const long eta = s.iter > 0 ? long(elapsed / double(s.iter) * double(s.iters - s.iter)) : 0;
    if (const auto& sink = progress_sink())
      return sink("recon [" + std::to_string(s.block + 1) + "/" + std::to_string(s.blocks) + "] " + s.name + ": " + s.stage,
                  size_t(s.iter), size_t(s.iters));
    // A terminal clears the rest of the old line; a log gets plain carriage returns.
    static const char* const redraw = isatty(fileno(stderr)) ? "\r\033[K" : "\r";
    if (s.stage == "collect")
      std::fprintf(stderr, "%srecon [%zu/%zu] %s: data %lld/%lld img   ", redraw, s.block + 1, s.blocks, s.name.c_str(),
                   static_cast<long long>(s.iter), static_cast<long long>(s.iters));
    else
      std::fprintf(stderr, "%srecon [%zu/%zu] %s: iter %lld/%lld rec %.4g round %.4g b %.1f ETA %02ld:%02ld:%02ld   ",
                   redraw, s.block + 1, s.blocks, s.name.c_str(), static_cast<long long>(s.iter), static_cast<long long>(s.iters),
                   s.rec_loss, s.round_loss, s.b, eta / 3600, (eta / 60) % 60, eta % 60);
    std::fflush(stderr);
  }

 private:
  std::string block_, stage_;
  std::chrono::steady_clock::time_point stage_start_;
};

// The calibration images and their prompts. With annotations, the seed's order: the annotation
// file's images as listed, after mmdetection's training-set filter (images without annotations
// and images whose shorter side is below 32 dropped), those found in the folder; without, the
// folder's numbered files by name. With ground-truth or file prompts, images without a box are
// skipped; a detector prompts every image (the seed's placeholder box where it finds nothing).
struct CalibrationSet {
  std::vector<const coco::Image*> images;
  std::unordered_map<int64_t, std::vector<eval::BoxPrompt>> prompts;
  size_t without_prompts = 0;
  const detect::Detector* detector = nullptr;
  std::vector<int64_t> category_ids;  // the detector's classes in the annotations
};

using eval::image_id_of;

// Without annotations, the images are the folder's numbered files and the detections name
// the categories. Sizes are read from the first `count` images that have detections (the ones
// calibrated on); the others are never prompted, so their size is left unbounded.
coco::Dataset dataset_from_detections(const QuantizeOptions& o, size_t count) {
  const nlohmann::json root = coco::read_json_file(o.calib_prompts);
  if (!root.is_array()) throw Error(o.calib_prompts, "detections must be a JSON list (COCO results format)");
  std::set<int64_t> detected, categories;
  for (const auto& d : root) {
    if (!d.is_object() || !d.contains("image_id") || !d["image_id"].is_number_integer() || !d.contains("category_id") ||
        !d["category_id"].is_number_integer())
      throw Error(o.calib_prompts, "every detection needs integer image_id and category_id");
    detected.insert(d["image_id"].get<int64_t>());
    categories.insert(d["category_id"].get<int64_t>());
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(o.calib_images))
    if (entry.is_regular_file() && image_id_of(entry.path()) >= 0) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  coco::Dataset d;
  size_t sized = 0;
  for (const auto& file : files) {
    coco::Image image;
    image.id = image_id_of(file);
    image.file_name = file.filename().string();
    image.width = image.height = int64_t(1) << 40;
    if (detected.count(image.id) && sized < count) {
      const at::Tensor pixels = io::read_image_rgb(file.string());
      image.height = pixels.size(0);
      image.width = pixels.size(1);
      ++sized;
    }
    d.image_index[image.id] = d.images.size();
    d.images.push_back(image);
  }
  for (const int64_t id : detected)
    if (!d.image_index.count(id)) {
      d.image_index[id] = d.images.size();
      d.images.push_back({id, int64_t(1) << 40, int64_t(1) << 40, ""});  // detected, not in the folder
    }
  for (const int64_t id : categories) {
    d.category_index[id] = d.categories.size();
    d.categories.push_back({id, std::to_string(id)});
  }
  return d;
}

// mmdetection's CocoDataset._filter_imgs(min_size=32) for a training set.
bool passes_training_filter(const coco::Image& image, const std::set<int64_t>& annotated) {
  return annotated.count(image.id) > 0 && std::min(image.width, image.height) >= 32;
}

CalibrationSet select_calibration(const QuantizeOptions& o, const coco::Dataset& gt, size_t count,
                                  const detect::Detector* detector) {
  std::set<int64_t> annotated;
  for (const auto& a : gt.annotations) annotated.insert(a.image_id);
  const bool annotation_order = !o.calib_annotations.empty();
  std::vector<const coco::Image*> present;
  for (const auto& image : gt.images)
    if (!image.file_name.empty() && std::filesystem::is_regular_file(o.calib_images + "/" + image.file_name) &&
        (!annotation_order || passes_training_filter(image, annotated)))
      present.push_back(&image);
  if (!annotation_order)
    std::sort(present.begin(), present.end(), [](const auto* a, const auto* b) { return a->file_name < b->file_name; });
  CalibrationSet set;
  set.detector = detector;
  if (detector) {
    set.category_ids = eval::detector_category_ids(detector->classes(), annotation_order ? &gt : nullptr);
  } else {
    set.prompts = eval::load_box_prompts(o.calib_prompts.empty() ? "gt" : o.calib_prompts, gt, {0.0, INT32_MAX});
  }
  for (const auto* image : present) {
    if (set.images.size() == count) break;
    const auto it = set.prompts.find(image->id);
    if (!detector && (it == set.prompts.end() || it->second.empty())) {
      ++set.without_prompts;
      continue;
    }
    set.images.push_back(image);
  }
  if (present.empty())
    throw Error(o.calib_images, o.calib_annotations.empty()
                                    ? std::string("holds no numbered images (e.g. COCO's 000000397133.jpg)")
                                    : "holds none of the " + std::to_string(gt.images.size()) + " images of " + o.calib_annotations);
  if (set.images.size() < count)
    throw Error(o.calib_images, "has " + std::to_string(set.images.size()) + " calibration images with prompts (" +
                                    std::to_string(present.size()) + " images found, " + std::to_string(set.without_prompts) +
                                    " without prompts), fewer than --calib-count " + std::to_string(count));
  return set;
}

std::vector<std::string> calibration_files(const CalibrationSet& set) {
  std::vector<std::string> files;
  for (const auto* image : set.images) files.push_back(image->file_name);
  return files;
}

// Calibration reads each image once per stage; a detector's boxes are computed once.
quant::CalibrationSample load_sample(const QuantizeOptions& o, CalibrationSet& set, size_t index) {
  const coco::Image& image = *set.images.at(index);
  quant::CalibrationSample sample;
  sample.name = image.file_name;
  const at::Tensor bgr = io::read_image_bgr(o.calib_images + "/" + image.file_name);
  sample.image = io::swap_red_blue(bgr);
  if (set.detector && !set.prompts.count(image.id))
    set.prompts[image.id] = eval::prompts_from_detections(set.detector->detect(bgr), set.category_ids, {true, 0});
  for (const auto& b : set.prompts.at(image.id)) sample.boxes.push_back({b.x0, b.y0, b.x1, b.y1});
  return sample;
}

// "mask_decoder.transformer.layers.0.self_attn.q_proj.weight_fake_quant" -> the block
// "mask_decoder.transformer.layers.0" (encoder: "image_encoder.blocks.3").
std::string block_of(const std::string& name) {
  for (const std::string prefix : {"mask_decoder.transformer.layers.", "image_encoder.blocks."}) {
    if (name.rfind(prefix, 0) == 0) {
      const size_t dot = name.find('.', prefix.size());
      return name.substr(0, dot);
    }
  }
  const size_t dot = name.find('.', name.find('.', name.find('.') + 1) + 1);
  return name.substr(0, dot);
}

nlohmann::json quantizer_json(const quant::Quantizer& q, double sqnr) {
  nlohmann::json j = {{"name", q.name()}, {"bit", q.range().bit}, {"symmetric", q.range().symmetric}};
  j["sqnr_db"] = std::isfinite(sqnr) ? nlohmann::json(sqnr) : nlohmann::json("inf");
  if (const auto* affine = dynamic_cast<const quant::AffineQuantizer*>(&q)) {
    j["kind"] = q.is_weight() ? "weight" : "activation";
    j["ch_axis"] = affine->ch_axis();
    if (affine->scale().numel() == 1) {
      j["scale"] = affine->scale().item<double>();
      j["zero_point"] = affine->zero_point().item<int64_t>();
    } else {
      j["scale_min"] = affine->scale().min().item<double>();
      j["scale_max"] = affine->scale().max().item<double>();
      j["channels"] = affine->scale().numel();
    }
  } else if (const auto* log = dynamic_cast<const quant::LogQuantizer*>(&q)) {
    j["kind"] = "agq_softmax";
    j["scale"] = log->scale();
    j["tau"] = log->tau();
    j["tau_errors"] = log->observer().tau_errors();
  }
  return j;
}

int run_quantize(const QuantizeOptions& o) {
  init_runtime(o.threads);
  quant::QuantConfig config = quant::load_quant_config(o.config);
  if (config.recon && o.recon_iters >= 0) config.recon->iters = o.recon_iters;
  const bool recon = config.recon.has_value() && !o.no_recon;
  if (o.device == "cuda" && !torch::cuda::is_available())
    throw Error("--device cuda", "this LibTorch build has no CUDA support or sees no GPU");
  const size_t count = size_t(o.calib_count > 0 ? o.calib_count : config.calibrate);
  if (!std::filesystem::is_directory(o.calib_images)) throw Error(o.calib_images, "is not a directory");
  if (o.calib_annotations.empty() && o.calib_prompts.empty() && o.calib_detector.empty())
    throw Error("quantize",
                "needs --calib-annotations (ground-truth boxes), --calib-prompts (detections) or --calib-detector");
  if (!o.calib_prompts.empty() && !o.calib_detector.empty())
    throw Error("quantize", "give --calib-prompts or --calib-detector, not both");
  std::unique_ptr<detect::Detector> detector;
  if (!o.calib_detector.empty()) {
    detector = detect::load_detector(o.calib_detector);
    std::fprintf(stderr, "calibration prompts from %s\n", detector->describe().c_str());
  }
  coco::Dataset gt;
  if (!o.calib_annotations.empty()) {
    gt = coco::load_annotations(o.calib_annotations);
  } else if (!o.calib_prompts.empty()) {
    gt = dataset_from_detections(o, count);
  } else {
    gt.images = eval::numbered_images(o.calib_images);
  }
  CalibrationSet set = select_calibration(o, gt, count, detector.get());
  if (set.without_prompts > 0) std::fprintf(stderr, "skipped %zu images without prompts\n", set.without_prompts);

  auto model = sam::load_sam(o.model);
  if (o.device != "cpu") model->to(torch::Device(o.device));
  std::fprintf(stderr, "model: %s\n", model->config.describe().c_str());
  quant::QuantizedSam qsam(model, config, o.quant_encoder);
  std::fprintf(stderr, "W%dA%d, %zu quantizers%s, BIG %s, AGQ %s, %zu calibration images\n", config.w.bit, config.a.bit,
               qsam.quantizers().size(), o.quant_encoder ? " (encoder included)" : " (decoder only)",
               config.ptq4sam.big ? "on" : "off", config.ptq4sam.agq ? "on" : "off", count);

  const auto source = [&](size_t i) { return load_sample(o, set, i); };
  std::map<std::string, std::unique_ptr<Progress>> bars;
  const auto progress = [&](const std::string& stage, size_t done, size_t total) {
    auto& bar = bars[stage];
    if (!bar) bar = std::make_unique<Progress>("calibrate: " + stage, total, stage == "weights" ? "layer" : "img");
    bar->update(done);
    if (done == total) bar->finish();
  };
  const quant::CalibrationStats stats = quant::calibrate(qsam, count, source, progress);
  for (const auto& site : qsam.big_sites())
    std::fprintf(stderr, "BIG %s: %s (%d peaks)\n", site.name.c_str(), site.decision.bimodal ? "bimodal, folded" : "unimodal",
                 site.decision.peaks);

  std::vector<quant::ReconBlockResult> recon_results;
  // PTQ4SAM-S's end-to-end numbers, for the report to compare with PTQ4SAM-L's.
  std::optional<quant::QuantizationQuality> before_recon;
  if (recon && !o.report.empty()) before_recon = quant::measure_quality(qsam, count, source, progress, false);
  const std::string checkpoint = o.recon_checkpoint.empty() ? o.out + ".recon.safetensors" : o.recon_checkpoint;
  if (recon) {
    std::vector<std::string> names;
    for (const auto* image : set.images) names.push_back(image->file_name);
    quant::ReconOptions ro;
    ro.config = *config.recon;
    ro.seed = o.seed;
    ro.checkpoint = checkpoint;
    ro.fingerprint = run_fingerprint(o, config, names);
    ro.keep_worse = o.recon_keep_worse;
    ReconLine line;
    ro.progress = [&line](const quant::ReconStatus& s) { line(s); };
    if (std::filesystem::exists(checkpoint)) std::fprintf(stderr, "resuming from %s\n", checkpoint.c_str());
    std::fprintf(stderr, "reconstruction: %d iterations per block, drop_prob %g, seed %llu\n", ro.config.iters,
                 ro.config.drop_prob, static_cast<unsigned long long>(o.seed));
    recon_results = quant::reconstruct(qsam, count, source, ro);
    std::fprintf(stderr, "\n");
    double total = 0;
    for (const auto& r : recon_results) {
      std::fprintf(stderr, "recon %-58s mse %.4g -> %.4g  %.1f s%s", r.block.c_str(), r.mse_before, r.mse_after,
                   r.seconds, r.resumed ? " (checkpoint)" : "");
      if (r.reverted) std::fprintf(stderr, " (training gave %.4g: calibrated state kept)", r.mse_trained);
      std::fprintf(stderr, "\n");
      total += r.seconds;
    }
    std::fprintf(stderr, "reconstruction: %zu blocks, %.1f s\n", recon_results.size(), total);
  }

  quant::save_artifact(qsam, o.out);
  std::error_code ec;
  if (recon) std::filesystem::remove(checkpoint, ec);  // the artifact holds everything now
  const auto out_bytes = std::filesystem::file_size(o.out, ec), in_bytes = std::filesystem::file_size(o.model, ec);

  if (!o.report.empty()) {
    const auto quality = quant::measure_quality(qsam, count, source, progress);
    nlohmann::json report = {{"model", o.model},
                             {"config", o.config},
                             {"quant_encoder", o.quant_encoder},
                             {"calibration_images", count},
                             {"calibration_files", calibration_files(set)},
                             {"calibration_boxes", stats.boxes},
                             {"calibration_seconds", stats.seconds},
                             {"artifact_bytes", out_bytes},
                             {"checkpoint_bytes", in_bytes}};
    const auto finite = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json("inf"); };
    report["embedding_sqnr_db"] = finite(quality.embedding_sqnr_db);
    report["mask_logits_sqnr_db"] = finite(quality.mask_logits_sqnr_db);
    report["mask_sign_agreement"] = quality.mask_agreement;
    nlohmann::json big = nlohmann::json::object();
    for (const auto& site : qsam.big_sites()) big[site.name] = {{"bimodal", site.decision.bimodal}, {"peaks", site.decision.peaks}};
    report["big"] = big;
    if (recon) {
      nlohmann::json entries = nlohmann::json::array();
      for (const auto& r : recon_results) entries.push_back(quant::to_json(r));
      report["reconstruction"] = entries;
      if (before_recon)
        report["before_reconstruction"] = {{"embedding_sqnr_db", finite(before_recon->embedding_sqnr_db)},
                                           {"mask_logits_sqnr_db", finite(before_recon->mask_logits_sqnr_db)},
                                           {"mask_sign_agreement", before_recon->mask_agreement}};
      report["recon_seed"] = o.seed;
    }
    std::map<std::string, std::vector<double>> per_block;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& q : qsam.quantizers()) {
      const double sqnr = quality.quantizer_sqnr_db.at(q->name());
      list.push_back(quantizer_json(*q, sqnr));
      if (std::isfinite(sqnr)) per_block[block_of(q->name())].push_back(sqnr);
    }
    nlohmann::json blocks = nlohmann::json::object();
    for (const auto& [block, values] : per_block) {
      double sum = 0;
      for (const double v : values) sum += v;
      blocks[block] = {{"quantizers", values.size()},
                       {"sqnr_db_mean", sum / double(values.size())},
                       {"sqnr_db_min", *std::min_element(values.begin(), values.end())}};
    }
    report["blocks"] = blocks;
    report["quantizers"] = list;
    io::write_file_atomic(o.report, report.dump(2) + "\n");
  }
  std::fprintf(stderr, "wrote %s: %.2f MB (checkpoint %.2f MB, %.1fx smaller); calibration %.1f s for %zu images\n",
               o.out.c_str(), double(out_bytes) / 1e6, double(in_bytes) / 1e6,
               out_bytes > 0 ? double(in_bytes) / double(out_bytes) : 0.0, stats.seconds, count);
  return 0;
}

}  // namespace

Runner add_quantize_command(CLI::App& app) {
  auto o = std::make_shared<QuantizeOptions>();
  auto* cmd = app.add_subcommand(
      "quantize", "Quantize SAM with PTQ4SAM (calibration: BIG, AGQ, observers; QDrop reconstruction with a 'recon' config)");
  cmd->footer(
      "Example:\n"
      "  ptq4sam quantize --model sam_vit_b_01ec64.pth --config configs/w6a6.yaml \\\n"
      "      --calib-images train2017 --calib-annotations instances_train2017.json \\\n"
      "      --out sam_b_w6a6.safetensors --report report.json\n"
      "The artifact runs with 'ptq4sam segment|eval --model sam_b_w6a6.safetensors'.\n"
      "PTQ4SAM-L: --config configs/w6a6_recon.yaml adds QDrop reconstruction (--recon-iters to shorten it);\n"
      "a killed run started again with the same arguments continues from its last finished block.");
  cmd->add_option("--model", o->model, "Official SAM checkpoint (.pth)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--config", o->config, "Quantization config (YAML with the seed's keys, e.g. configs/w6a6.yaml)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-images", o->calib_images, "Folder of calibration images")->required();
  cmd->add_option("--calib-annotations", o->calib_annotations,
                  "COCO annotations of the calibration images (image list and sizes; ground-truth boxes as prompts)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-prompts", o->calib_prompts,
                  "Detections (COCO results JSON) as box prompts instead of the ground truth; alone, the images "
                  "are the folder's files, numbered by the digits ending their names (COCO's 000000397133.jpg is image 397133)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-detector", o->calib_detector,
                  "Prompt calibration with a detector's boxes (YOLOX or Faster R-CNN checkpoint), as the seed does")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-count", o->calib_count,
                  "Calibration images: the first in the annotations' order after mmdetection's training-set filter "
                  "(without annotations, in file-name order) (default: the config's 'calibrate', 32 in the paper)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_flag("--quant-encoder", o->quant_encoder, "Quantize the image encoder too (the seed's --quant-encoder)");
  cmd->add_option("--out", o->out, "Quantized artifact to write (.safetensors)")->required();
  cmd->add_option("--report", o->report, "Write a JSON report: every quantizer's parameters and SQNR on the calibration data");
  cmd->add_option("--threads", o->threads, "Threads (0 = all cores)");
  cmd->add_flag("--no-recon", o->no_recon, "Skip reconstruction even when the config has a 'recon' section (PTQ4SAM-S only)");
  cmd->add_option("--seed", o->seed, "Seed of reconstruction's random choices: the same seed gives the same artifact");
  cmd->add_option("--device", o->device, "Where reconstruction runs")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--recon-iters", o->recon_iters, "Iterations per block, instead of the config's recon.iters")
      ->check(CLI::Range(0, 100000000));
  cmd->add_flag("--recon-keep-worse", o->recon_keep_worse,
                "Keep a block's trained state even when its error rose, as the seed does (default: such a block goes "
                "back to its calibrated state)");
  cmd->add_option("--recon-checkpoint", o->recon_checkpoint,
                  "Reconstruction progress file, rewritten after each block; a run started again with the same "
                  "arguments continues from it (default: <out>.recon.safetensors, removed once the artifact is written)");
  return [o] { return run_quantize(*o); };
}

}  // namespace ptq4sam::cli
