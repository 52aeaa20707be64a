// Detection time and peak RSS of a seed detector on random weights of the published size, as
// the seed runs it: YOLOX (default YOLOX-L: depth 1.0, width 1.0) on one 640 x 480 picture
// letterboxed to 640 x 640, or Faster R-CNN R50-FPN on one 1333 x 800 picture (no resize, no
// padding). --write PATH saves the random weights as a checkpoint in mmdetection's key names,
// for `ptq4sam bench --detector PATH` and `ptq4sam detect --detector PATH`.
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "detect/faster_rcnn.h"
#include "detect/random_weights.h"
#include "detect/yolox_detector.h"

namespace {

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time a seed detector (pre-processing, network, post-processing) on random weights"};
  std::string arch = "yolox";
  double deepen = 1.0, widen = 1.0;
  int threads = 2, runs = 3;
  std::string write;
  app.add_option("--arch", arch, "yolox or faster-rcnn")->capture_default_str()->check(CLI::IsMember({"yolox", "faster-rcnn"}));
  app.add_option("--deepen", deepen, "YOLOX depth factor (YOLOX-L 1.0, -s 0.33)")->capture_default_str();
  app.add_option("--widen", widen, "YOLOX width factor (YOLOX-L 1.0, -s 0.5)")->capture_default_str();
  app.add_option("--threads", threads, "Threads")->capture_default_str();
  app.add_option("--runs", runs, "Timed runs after one untimed")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--write", write, "Also save the random checkpoint here");
  CLI11_PARSE(app, argc, argv);
  using namespace ptq4sam;
  cli::init_runtime(threads);
  const bool yolox = arch == "yolox";
  io::StateDict state = yolox ? detect::random_yolox_state_dict(deepen, widen, 80, 0)
                              : detect::random_faster_rcnn_state_dict(64, 256, 1024, 80, 0);
  if (!write.empty()) io::save_checkpoint(write, state, false);
  std::unique_ptr<detect::Detector> detector;
  if (yolox)
    detector = std::make_unique<detect::YoloxDetector>(std::move(state), detect::DetectorOptions{});
  else
    detector = std::make_unique<detect::FasterRcnnDetector>(std::move(state), detect::DetectorOptions{});
  std::printf("%s, %.1f MB of weights\n", detector->describe().c_str(), double(detector->weight_bytes()) / 1e6);
  at::manual_seed(0);
  const at::Tensor image = yolox ? at::randint(0, 256, {480, 640, 3}, at::kByte) : at::randint(0, 256, {800, 1333, 3}, at::kByte);
  const auto seconds = [](auto start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  detector->detect(image);
  std::vector<double> whole;
  for (int run = 0; run < runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    const size_t boxes = detector->detect(image).size();
    whole.push_back(seconds(start));
    std::printf("run %d: %.3f s, %zu boxes\n", run + 1, whole.back(), boxes);
  }
  std::sort(whole.begin(), whole.end());
  std::printf("min %.3f s, median %.3f s per %lld x %lld image on %d threads; peak RSS %.0f MB\n", whole.front(),
              whole[whole.size() / 2], static_cast<long long>(image.size(1)), static_cast<long long>(image.size(0)),
              threads, peak_rss_mb());
  return 0;
}
