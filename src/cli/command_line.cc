#include "cli/command_line.h"

#include <algorithm>

namespace ptq4sam::cli {

CommandLine::CommandLine()
    : app_("ptq4sam " PTQ4SAM_VERSION ": Segment Anything in C++, with post-training quantization (PTQ4SAM)") {
  app_.require_subcommand(1);
  app_.set_version_flag("--version", std::string(PTQ4SAM_VERSION));
  runners_["segment"] = add_segment_command(app_);
  runners_["eval"] = add_eval_command(app_);
  runners_["coco-eval"] = add_coco_eval_command(app_);
  runners_["synth-coco"] = add_synth_coco_command(app_);
  runners_["quantize"] = add_quantize_command(app_);
  runners_["bench"] = add_bench_command(app_);
  runners_["detect"] = add_detect_command(app_);
  runners_["everything"] = add_everything_command(app_);
}

Runner CommandLine::parse(std::vector<std::string> args) {
  // CLI11 takes the arguments last first, without the program name.
  if (!args.empty()) args.erase(args.begin());
  std::reverse(args.begin(), args.end());
  app_.parse(args);
  return runners_.at(app_.get_subcommands().front()->get_name());
}

}  // namespace ptq4sam::cli
