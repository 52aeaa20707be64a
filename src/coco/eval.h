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

// Runs evaluate(), accumulate() and summarize() of pycocotools' COCOeval. `max_dets` needs at
// least three positive values (mmdetection sets 100, 300, 1000); throws ptq4sam::Error otherwise.
EvalResult evaluate(const Dataset& gt, const std::vector<Annotation>& dts, IouType type,
                    const EvalParams& params = EvalParams());

// The maxDets each of the 12 summary numbers is taken at, as pycocotools' summarize() does:
// the first AP always at 100 (its default argument), the other APs and the area-range ARs at
// max_dets[2], the three ARs at max_dets[0..2]. With (100, 300, 1000) the headline AP (the
// seed's and mmdetection's segm_mAP) is at 100 detections, AP50 ... APl at 1000.
std::array<int, 12> summary_max_dets(const std::vector<int>& max_dets);

// The 12-line text COCOeval.summarize() prints.
std::string summary_text(const std::array<double, 12>& stats, const std::vector<int>& max_dets = {1, 10, 100});

}  // namespace ptq4sam::coco
