// YOLOX detection time on a random network of a published size (default YOLOX-L: depth 1.0,
// width 1.0, 80 classes), one 640 x 480 picture letterboxed to 640 x 640, as the seed runs it.
// --write PATH saves the random weights as a checkpoint in mmdetection's key names, for
// `ptq4sam bench --detector PATH` (the row that reports the target).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "detect/random_weights.h"
#include "detect/yolox_detector.h"

int main(int argc, char** argv) {
  CLI::App app{"Time YOLOX detection (letterbox, network, decoding, NMS) on random weights"};
  double deepen = 1.0, widen = 1.0;
  int threads = 2, runs = 3;
  std::string write;
  app.add_option("--deepen", deepen, "Depth factor (YOLOX-L 1.0, -s 0.33)")->capture_default_str();
  app.add_option("--widen", widen, "Width factor (YOLOX-L 1.0, -s 0.5)")->capture_default_str();
  app.add_option("--threads", threads, "Threads")->capture_default_str();
  app.add_option("--runs", runs, "Timed runs after one untimed")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--write", write, "Also save the random checkpoint here");
  CLI11_PARSE(app, argc, argv);
  using namespace ptq4sam;
  cli::init_runtime(threads);
  const io::StateDict state = detect::random_yolox_state_dict(deepen, widen, 80, 0);
  if (!write.empty()) io::save_checkpoint(write, state, false);
  const detect::YoloxDetector detector(state, {});
  std::printf("%s\n", detector.describe().c_str());
  at::manual_seed(0);
  const at::Tensor image = at::randint(0, 256, {480, 640, 3}, at::kByte);
  const auto seconds = [](auto start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  detector.detect(image);
  std::vector<double> whole, network;
  size_t boxes = 0;
  for (int run = 0; run < runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    const detect::LetterboxedImage input = detect::yolox_letterbox(image);
    const auto t_net = std::chrono::steady_clock::now();
    const auto raw = detector.raw_outputs(input);
    network.push_back(seconds(t_net));
    boxes = detector.postprocess(raw, input.scale_factor).size();
    whole.push_back(seconds(start));
    std::printf("run %d: %.3f s (network %.3f s), %zu boxes\n", run + 1, whole.back(), network.back(), boxes);
  }
  std::sort(whole.begin(), whole.end());
  std::sort(network.begin(), network.end());
  std::printf("min %.3f s, median %.3f s per image (network min %.3f s) on %d threads\n", whole.front(),
              whole[whole.size() / 2], network.front(), threads);
  return 0;
}
