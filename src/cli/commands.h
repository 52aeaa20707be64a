#pragma once
// Subcommands of the ptq4sam binary. Each registers its options on the CLI11 app and returns
// the function that runs it.
#include <CLI/CLI.hpp>

#include <array>
#include <functional>
#include <nlohmann/json.hpp>

#include "coco/dataset.h"

namespace ptq4sam::cli {

using Runner = std::function<int()>;

Runner add_segment_command(CLI::App& app);
Runner add_coco_eval_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_synth_coco_command(CLI::App& app);

// The metrics.json schema: {"iou_type", "stats": [12], "AP", "AP50", ..., "ARl"}.
nlohmann::json metrics_json(coco::IouType type, const std::array<double, 12>& stats);

// Process-wide settings for a run: --threads (0 = all cores) for LibTorch and oneDNN, and an
// allocator that keeps activation buffers instead of returning them to the kernel.
void init_runtime(int threads);

}  // namespace ptq4sam::cli
