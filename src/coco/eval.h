#pragma once
// COCOeval (pycocotools) for segm and bbox: 10 IoU thresholds, 101 recall points, 4 area
// ranges, maxDets 1/10/100, crowd regions, per-category accumulation; the 12 summary numbers
// match pycocotools' to float64 rounding.
#include <array>
#include <string>
#include <vector>

#include "coco/dataset.h"

namespace ptq4sam::coco {

constexpr std::array<const char*, 12> kStatNames = {"AP", "AP50", "AP75", "APs", "APm", "APl",
                                                    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};

struct EvalParams {
  std::vector<double> iou_thresholds;     // np.linspace(.5, .95, 10)
  std::vector<double> recall_thresholds;  // np.linspace(0, 1, 101)
  std::vector<int> max_dets{1, 10, 100};
  std::vector<std::array<double, 2>> area_ranges{{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}};
  // Images to evaluate (pycocotools' params.imgIds); empty = every image of the ground truth.
  std::vector<int64_t> image_ids;
  EvalParams();
};

struct EvalResult {
  std::array<double, 12> stats;
  // precision[t][r][k][a][m] and recall[t][k][a][m], flattened; -1 where undefined.
  std::vector<double> precision, recall;
};

// Runs evaluate(), accumulate() and summarize() of pycocotools' COCOeval.
EvalResult evaluate(const Dataset& gt, const std::vector<Annotation>& dts, IouType type,
                    const EvalParams& params = EvalParams());

// The 12-line text COCOeval.summarize() prints.
std::string summary_text(const std::array<double, 12>& stats);

}  // namespace ptq4sam::coco
