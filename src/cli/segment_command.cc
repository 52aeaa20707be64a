// `ptq4sam segment`: one image, one prompt, masks and pictures out.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/overlay.h"
#include "cli/prompt_options.h"
#include "coco/rle.h"
#include "io/atomic_file.h"
#include "io/image.h"
#include "io/npy.h"
#include "sam/predictor.h"
#include "util/error.h"

namespace ptq4sam::cli {
namespace {

struct SegmentOptions {
  std::string model, image, mask_input, out_dir, save_logits, save_low_res, save_embedding;
  std::vector<std::string> points;
  std::string box;
  bool multimask = false;
  int threads = 0;
  quant::Backend backend = quant::Backend::kInteger;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int run_segment(const SegmentOptions& o) {
  init_runtime(o.threads);
  const auto t_load = std::chrono::steady_clock::now();
  const LoadedModel loaded = load_model(o.model, o.backend);
  const auto& model = loaded.sam;
  std::fprintf(stderr, "model: %s loaded in %.2f s\n", model->config.describe().c_str(), seconds_since(t_load));
  const at::Tensor image = io::read_image_rgb(o.image);
  const int64_t height = image.size(0), width = image.size(1);

  sam::Prompt prompt;
  for (const auto& text : o.points) prompt.points.push_back(parse_point_option(text, width, height));
  if (!o.box.empty()) prompt.box = parse_box_option(o.box, width, height);
  if (!o.mask_input.empty()) {
    const at::Tensor mask = io::read_npy(o.mask_input);
    const int64_t side = 4 * model->config.image_embedding_size();
    const bool shape_ok = mask.numel() == side * side && mask.size(-1) == side && mask.size(-2) == side;
    if (!mask.is_floating_point() || !shape_ok)
      throw Error(o.mask_input, "mask input must be float logits of shape 1 x " + std::to_string(side) + " x " + std::to_string(side));
    prompt.mask_input = mask.to(at::kFloat).reshape({1, side, side});
  }
  if (prompt.points.empty() && !prompt.box && !prompt.mask_input.defined())
    throw Error("segment", "give at least one --point, a --box or a --mask-input");

  sam::Predictor predictor(model);
  const auto t_encode = std::chrono::steady_clock::now();
  predictor.set_image(image);
  const double encode_s = seconds_since(t_encode);
  const auto t_decode = std::chrono::steady_clock::now();
  const sam::Prediction pred = predictor.predict({prompt}, o.multimask, /*return_logits=*/true);
  const double decode_s = seconds_since(t_decode);
  std::fprintf(stderr, "image encoder: %.3f s, mask decoder: %.3f s\n", encode_s, decode_s);

  io::ensure_directory(o.out_dir);
  const at::Tensor logits = pred.masks[0];
  const at::Tensor binary = logits > sam::Sam::kMaskThreshold;
  nlohmann::json masks = nlohmann::json::array();
  for (int64_t i = 0; i < binary.size(0); ++i) {
    const std::string file = "mask_" + std::to_string(i) + ".png";
    const at::Tensor mask = binary[i].to(at::kByte).contiguous();
    io::write_png(o.out_dir + "/" + file, mask * 255);
    const coco::Rle rle = coco::encode(mask.data_ptr<uint8_t>(), height, width);
    masks.push_back({{"index", i},
                     {"file", file},
                     {"predicted_iou", pred.iou[0][i].item<double>()},
                     {"area", coco::area(rle)},
                     {"bbox", coco::to_bbox(rle)}});
  }
  io::write_png(o.out_dir + "/overlay.png", draw_overlay(image, binary, {prompt}));
  const nlohmann::json result = {{"image", o.image},
                                 {"width", width},
                                 {"height", height},
                                 {"model", model->config.describe()},
                                 {"multimask", o.multimask},
                                 {"encoder_seconds", encode_s},
                                 {"decoder_seconds", decode_s},
                                 {"masks", masks}};
  io::write_file_atomic(o.out_dir + "/result.json", result.dump(2) + "\n");
  if (!o.save_logits.empty()) io::write_npy(o.save_logits, logits);
  if (!o.save_low_res.empty()) io::write_npy(o.save_low_res, pred.low_res[0]);
  if (!o.save_embedding.empty()) io::write_npy(o.save_embedding, predictor.features()[0]);
  std::printf("%lld mask(s) written to %s (best predicted IoU %.3f)\n", (long long)binary.size(0), o.out_dir.c_str(),
              pred.iou[0].max().item<double>());
  return 0;
}

}  // namespace

Runner add_segment_command(CLI::App& app) {
  auto options = std::make_shared<SegmentOptions>();
  CLI::App* cmd = app.add_subcommand("segment", "Segment one image from point, box and/or mask prompts");
  cmd->footer(
      "Example:\n"
      "  ptq4sam segment --model sam_vit_b_01ec64.pth --image dog.jpg \\\n"
      "      --point 400,290,1 --point 640,100,0 --multimask --out out/\n"
      "  writes out/mask_0.png.., out/overlay.png and out/result.json");
  cmd->add_option("--model", options->model, "Official SAM checkpoint (.pth) or quantized artifact (.safetensors)")->required();
  cmd->add_option("--image", options->image, "Input image (JPEG, PNG, ...)")->required();
  cmd->add_option("--point", options->points, "Point prompt X,Y,LABEL in image pixels (1 fg, 0 bg); repeatable");
  cmd->add_option("--box", options->box, "Box prompt X0,Y0,X1,Y1 in image pixels");
  cmd->add_option("--mask-input", options->mask_input, "Low-res mask logits (.npy, 1 x 256 x 256 float32)");
  cmd->add_flag("--multimask", options->multimask, "Return 3 candidate masks instead of 1");
  cmd->add_option("--out", options->out_dir, "Output directory")->required();
  cmd->add_option("--save-logits", options->save_logits, "Write mask logits at image size (C x H x W .npy)");
  cmd->add_option("--save-low-res", options->save_low_res, "Write low-res logits (C x 256 x 256 .npy)");
  cmd->add_option("--save-embedding", options->save_embedding, "Write the image embedding (256 x 64 x 64 .npy)");
  cmd->add_option("--threads", options->threads, "Threads (default: all cores)");
  add_backend_option(*cmd, options->backend);
  return [options]() { return run_segment(*options); };
}

}  // namespace ptq4sam::cli
