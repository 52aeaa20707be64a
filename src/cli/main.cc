// The ptq4sam command-line tool.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"ptq4sam " PTQ4SAM_VERSION
               ": Segment Anything in C++, with post-training quantization (PTQ4SAM)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(PTQ4SAM_VERSION));
  std::map<std::string, ptq4sam::cli::Runner> runners;
  runners["segment"] = ptq4sam::cli::add_segment_command(app);
  runners["eval"] = ptq4sam::cli::add_eval_command(app);
  runners["coco-eval"] = ptq4sam::cli::add_coco_eval_command(app);
  runners["synth-coco"] = ptq4sam::cli::add_synth_coco_command(app);
  runners["quantize"] = ptq4sam::cli::add_quantize_command(app);
  runners["bench"] = ptq4sam::cli::add_bench_command(app);
  runners["detect"] = ptq4sam::cli::add_detect_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto* sub : app.get_subcommands()) return runners.at(sub->get_name())();
  } catch (const ptq4sam::Error& e) {
    std::fprintf(stderr, "ptq4sam: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "ptq4sam: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptq4sam: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
