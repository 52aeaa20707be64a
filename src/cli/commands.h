#pragma once
// Subcommands of the ptq4sam binary. Each registers its options on the CLI11 app and returns
// the function that runs it.
#include <CLI/CLI.hpp>

#include <array>
#include <functional>
#include <nlohmann/json.hpp>

#include "coco/dataset.h"
#include "quant/artifact.h"
#include "quant/quantized_sam.h"
#include "sam/sam.h"

namespace ptq4sam::cli {

using Runner = std::function<int()>;

Runner add_segment_command(CLI::App& app);
Runner add_coco_eval_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_synth_coco_command(CLI::App& app);
Runner add_quantize_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_detect_command(CLI::App& app);
Runner add_everything_command(CLI::App& app);

// A model from an official checkpoint (.pth) or a quantized artifact (.safetensors), which
// runs on `backend` with its quantizers (kept alive here). Reports what runs on stderr, and
// warns once, naming them, about layers the integer runtime left simulated. From then on, the
// process's large CPU tensors (the forward passes' activations) come from
// kernels::LargeBlockPool: it is for programs that run models, not ones that calibrate them.
struct LoadedModel {
  std::shared_ptr<sam::Sam> sam;
  std::unique_ptr<quant::QuantizedSam> quantized;
};
LoadedModel load_model(const std::string& path, quant::Backend backend = quant::Backend::kInteger);

// --backend integer|simulated (default integer): how a quantized artifact runs.
void add_backend_option(CLI::App& cmd, quant::Backend& backend);
const char* backend_name(quant::Backend backend);

// The metrics.json schema: {"iou_type", "max_dets": [3], "stats": [12], "AP", "AP50", "AP75",
// "APs", "APm", "APl", "AR<max_dets[0]>", "AR<max_dets[1]>", "AR<max_dets[2]>", "ARs", "ARm", "ARl"}.
nlohmann::json metrics_json(coco::IouType type, const std::array<double, 12>& stats,
                            const std::vector<int>& max_dets = {1, 10, 100});

// Process-wide settings for a run: --threads (0 = all cores) for LibTorch and oneDNN, and an
// allocator that keeps activation buffers instead of returning them to the kernel.
void init_runtime(int threads);

}  // namespace ptq4sam::cli
