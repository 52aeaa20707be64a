// Mask-decoder time after the image embedding: box prompts through the prompt encoder, the
// two-way transformer, the upscaling and heads, and the binary masks at the original image
// size, as `segment` and `eval` produce them. The embedding is random (the decoder's cost does
// not depend on its values), so no encoder runs; the decoder is SAM's for every model size.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <torch/csrc/autograd/profiler.h>

#include "cli/commands.h"
#include "kernels/large_block_pool.h"
#include "sam/predictor.h"
#include "sam/random_weights.h"

using namespace ptq4sam;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<sam::Prompt> random_boxes(int64_t count, int64_t width, int64_t height, uint64_t seed) {
  at::manual_seed(int64_t(seed));
  const at::Tensor corners = at::rand({count, 4}, at::kDouble);
  std::vector<sam::Prompt> prompts(count);
  for (int64_t i = 0; i < count; ++i) {
    const auto c = corners[i];
    const double x0 = c[0].item<double>() * width * 0.7, y0 = c[1].item<double>() * height * 0.7;
    prompts[i].box = sam::Box{x0, y0, x0 + (0.1 + 0.2 * c[2].item<double>()) * width,
                              y0 + (0.1 + 0.2 * c[3].item<double>()) * height};
  }
  return prompts;
}

struct Timing {
  double min = 0, median = 0;
};

template <typename F>
Timing time_runs(int runs, F&& body) {
  body();  // warm-up: caches, the allocator's pool, oneDNN's primitives
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    times.push_back(seconds_since(start));
  }
  std::sort(times.begin(), times.end());
  return {times.front(), times[times.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_decoder: SAM mask-decoder time per box prompt, binary masks at the original size"};
  std::string model_path;
  int threads = 2, runs = 5, width = 640, height = 480;
  std::vector<int> batches{1, 64};
  bool multimask = false;
  app.add_option("--model", model_path, "Checkpoint or quantized artifact (default: random SAM weights)");
  app.add_option("--threads", threads, "Threads")->capture_default_str();
  app.add_option("--runs", runs, "Timed runs after one warm-up")->capture_default_str();
  app.add_option("--batch", batches, "Boxes per decoder call (repeatable)")->capture_default_str();
  app.add_option("--width", width, "Original image width")->capture_default_str();
  app.add_option("--height", height, "Original image height")->capture_default_str();
  app.add_flag("--multimask", multimask, "Three masks per prompt instead of one");
  std::string profile;
  app.add_option("--profile", profile, "Write a Chrome trace of ATen's ops in the last batch's decode to this file");
  CLI11_PARSE(app, argc, argv);
  cli::init_runtime(threads);

  std::shared_ptr<sam::Sam> model;
  cli::LoadedModel loaded;
  if (model_path.empty()) {
    // The decoder is the same at every size; a narrow encoder keeps the weights small.
    io::StateDict state = sam::random_state_dict(sam::vit_config(64, 2, 2, {1}), 0);
    model = sam::make_sam(state);
    kernels::use_large_block_pool();  // as load_model does for the CLI's models
  } else {
    loaded = cli::load_model(model_path);
    model = loaded.sam;
  }
  sam::Predictor predictor(model);
  const auto input = sam::get_preprocess_shape(height, width, model->config.encoder.img_size);
  const int64_t side = model->config.prompt_embed_dim, grid = model->config.image_embedding_size();
  at::manual_seed(0);
  predictor.set_features(at::randn({1, side, grid, grid}), input, {height, width});

  std::printf("decoder of %s, %d threads, %dx%d image, %s\n", model->config.describe().c_str(), threads, width, height,
              multimask ? "3 masks per box" : "1 mask per box");
  for (const int batch : batches) {
    const std::vector<sam::Prompt> prompts = random_boxes(batch, width, height, 1);
    const Timing t = time_runs(runs, [&] { predictor.predict(prompts, multimask, /*return_logits=*/false); });
    std::printf("batch %3d: min %7.1f ms, median %7.1f ms; per box min %6.2f ms, median %6.2f ms\n", batch, 1e3 * t.min,
                1e3 * t.median, 1e3 * t.min / batch, 1e3 * t.median / batch);
    // The same call's two halves: the decoder to low-res logits, and the binary masks at the
    // original size from them.
    at::Tensor boxes = at::empty({batch, 4}, at::kDouble);
    for (int i = 0; i < batch; ++i) {
      const sam::Box& b = *prompts[i].box;
      boxes[i] = at::tensor({b.x0, b.y0, b.x1, b.y1}, at::kDouble);
    }
    boxes = predictor.transform().apply_boxes(boxes, {height, width}).to(at::kFloat);
    at::Tensor low_res;
    const Timing decode = time_runs(runs, [&] { low_res = predictor.decode({}, {}, boxes, {}, multimask).first; });
    const Timing masks = time_runs(runs, [&] { (void)(predictor.upscale(low_res) > sam::Sam::kMaskThreshold); });
    if (!profile.empty()) {
      torch::autograd::profiler::RecordProfile record(profile);
      predictor.decode({}, {}, boxes, {}, multimask);
    }
    std::printf("           decoder to low-res logits: median %6.2f ms per box; binary masks at %dx%d: median %6.2f ms per box\n",
                1e3 * decode.median / batch, width, height, 1e3 * masks.median / batch);
  }
  return 0;
}
