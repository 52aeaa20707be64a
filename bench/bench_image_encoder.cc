// Image-embedding time and peak memory of a ViT-B-shaped SAM loaded from an official-format
// checkpoint. Without --model, a random ViT-B checkpoint is written first (in a child process,
// so that its memory does not count towards the peak RSS measured here).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "io/checkpoint.h"
#include "sam/predictor.h"
#include "sam/random_weights.h"

using namespace ptq4sam;

namespace {

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

void write_random_checkpoint(const std::string& path) {
  const pid_t child = fork();
  if (child == 0) {
    io::save_checkpoint(path, sam::random_state_dict(sam::vit_b_config(), 0));
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("writing the random checkpoint failed");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_image_encoder: SAM image-embedding time and peak RSS"};
  std::string model_path;
  int threads = 2, runs = 3;
  app.add_option("--model", model_path, "Checkpoint (default: write a random ViT-B one to the temp dir)");
  app.add_option("--threads", threads, "Threads");
  app.add_option("--runs", runs, "Timed runs after one warm-up");
  std::string write_model;
  app.add_option("--write-model", write_model, "Only write a random ViT-B checkpoint to this path and exit");
  CLI11_PARSE(app, argc, argv);
  if (!write_model.empty()) {
    io::save_checkpoint(write_model, sam::random_state_dict(sam::vit_b_config(), 0));
    std::printf("wrote %s\n", write_model.c_str());
    return 0;
  }

  bool temporary = false;
  if (model_path.empty()) {
    model_path = (std::filesystem::temp_directory_path() / "ptq4sam_bench_vit_b.pth").string();
    write_random_checkpoint(model_path);
    temporary = true;
  }
  std::printf("checkpoint: %s (%.1f MB)\n", model_path.c_str(), std::filesystem::file_size(model_path) / 1e6);
  cli::init_runtime(threads);
  const auto t0 = std::chrono::steady_clock::now();
  auto model = sam::load_sam(model_path);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("model: %s, loaded in %.2f s, RSS after load %.0f MB\n", model->config.describe().c_str(), load_s, peak_rss_mb());

  sam::Predictor predictor(model);
  const at::Tensor image = (at::rand({768, 1024, 3}) * 255).to(at::kByte);
  std::vector<double> times;
  for (int i = 0; i <= runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    predictor.set_image(image);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s %d: %.3f s\n", i == 0 ? "warm-up" : "run", i, s);
    if (i > 0) times.push_back(s);
  }
  std::sort(times.begin(), times.end());
  std::printf("image embedding, %d threads: min %.3f s, median %.3f s; peak RSS %.0f MB\n", threads, times.front(),
              times[times.size() / 2], peak_rss_mb());
  if (temporary) std::filesystem::remove(model_path);
  return 0;
}
