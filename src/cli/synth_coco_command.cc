// `ptq4sam synth-coco`: the bundled dataset, generated on demand.
#include <cstdio>

#include "cli/commands.h"
#include "eval/synthetic.h"

namespace ptq4sam::cli {

Runner add_synth_coco_command(CLI::App& app) {
  auto out = std::make_shared<std::string>();
  auto options = std::make_shared<eval::SyntheticOptions>();
  CLI::App* cmd = app.add_subcommand("synth-coco", "Generate a small synthetic COCO-style dataset with detections");
  cmd->footer(
      "Example:\n"
      "  ptq4sam synth-coco --out data/synth --images 8\n"
      "  ptq4sam eval --model sam.pth --images data/synth/images --annotations data/synth/instances.json \\\n"
      "      --prompts data/synth/detections.json --out out/eval");
  cmd->add_option("--out", *out, "Output folder (images/, instances.json, detections.json)")->required();
  cmd->add_option("--images", options->images, "Number of images")->capture_default_str();
  cmd->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  return [out, options]() {
    if (options->images < 1) throw std::invalid_argument("--images must be at least 1");
    std::printf("synth-coco: %s\n", eval::write_synthetic_coco(*out, *options).c_str());
    return 0;
  };
}

}  // namespace ptq4sam::cli
