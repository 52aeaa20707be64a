// `ptq4sam coco-eval`: pycocotools' COCOeval on annotation and result files.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "coco/eval.h"
#include "io/atomic_file.h"

namespace ptq4sam::cli {
namespace {

struct CocoEvalOptions {
  std::string annotations, iou_type = "segm", out;
  std::vector<std::string> results;
  std::vector<int> max_dets{1, 10, 100};
};

int run_coco_eval(const CocoEvalOptions& o) {
  const coco::IouType type = coco::parse_iou_type(o.iou_type);
  const auto start = std::chrono::steady_clock::now();
  const coco::Dataset gt = coco::load_annotations(o.annotations);
  const std::vector<coco::Annotation> dts = coco::load_results(o.results, gt, type);
  coco::EvalParams params;
  params.max_dets = o.max_dets;
  const coco::EvalResult result = coco::evaluate(gt, dts, type, params);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s", coco::summary_text(result.stats, o.max_dets).c_str());
  std::fprintf(stderr, "coco-eval: %zu images, %zu ground truths, %zu results (%s), %.2f s\n", gt.images.size(),
               gt.annotations.size(), dts.size(), o.iou_type.c_str(), seconds);
  if (!o.out.empty()) io::write_file_atomic(o.out, metrics_json(type, result.stats, o.max_dets).dump(2) + "\n");
  return 0;
}

}  // namespace

nlohmann::json metrics_json(coco::IouType type, const std::array<double, 12>& stats, const std::vector<int>& max_dets) {
  nlohmann::json j = {{"iou_type", coco::to_string(type)}, {"max_dets", max_dets}, {"stats", stats}};
  for (size_t i = 0; i < stats.size(); ++i) j[coco::kStatNames[i]] = stats[i];
  // The three ARs are named for the maxDets they are taken at (AR1, AR10, AR100 by default;
  // AR100, AR300, AR1000 with mmdetection's).
  for (const char* name : {"AR1", "AR10", "AR100"}) j.erase(name);
  const std::array<int, 12> dets = coco::summary_max_dets(max_dets);
  for (size_t i = 6; i < 9; ++i) j["AR" + std::to_string(dets[i])] = stats[i];
  return j;
}

Runner add_coco_eval_command(CLI::App& app) {
  auto options = std::make_shared<CocoEvalOptions>();
  CLI::App* cmd = app.add_subcommand("coco-eval", "Score COCO results against annotations (pycocotools' COCOeval)");
  cmd->footer(
      "Example:\n"
      "  ptq4sam coco-eval --annotations instances_val2017.json --results shard0/results_segm.json \\\n"
      "      shard1/results_segm.json --iou-type segm --out metrics.json\n"
      "Several result files are merged (e.g. the shards of one eval run).");
  cmd->add_option("--annotations", options->annotations, "Ground truth (instances_*.json)")->required();
  cmd->add_option("--results", options->results, "Result file(s), COCO results format")->required();
  cmd->add_option("--iou-type", options->iou_type, "segm or bbox")->capture_default_str();
  cmd->add_option("--out", options->out, "Write the 12 stats as JSON");
  cmd->add_option("--max-dets", options->max_dets,
                  "COCOeval's maxDets, three values (mmdetection and the PTQ4SAM seed: 100,300,1000)")
      ->delimiter(',')
      ->expected(3)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  return [options]() { return run_coco_eval(*options); };
}

}  // namespace ptq4sam::cli
