#pragma once
// A detector's boxes as the seed hands them to SAM and to COCO: category ids, prompt order,
// the placeholder for images without detections, and COCO results entries.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "coco/dataset.h"
#include "detect/detector.h"
#include "eval/prompts.h"

namespace ptq4sam::eval {

// The category id of each detector class: the ground-truth category of the same name (as
// mmdetection's CocoDataset maps CLASSES to cat_ids), else COCO's id of that class (80-class
// detectors), else -1. Without ground truth, COCO's ids.
std::vector<int64_t> detector_category_ids(const std::vector<std::string>& classes, const coco::Dataset* gt);

struct DetectionPromptOptions {
  // The seed's DetectorWrapper gives SAM one box [0, 0, 0, 0] with score 0.1 and label 0 on
  // an image without detections.
  bool placeholder_when_empty = true;
  int max_dets = 0;  // 0: every detection (the seed passes all of them)
};

// The seed's prompt for an image without detections: box [0, 0, 0, 0], score 0.1.
BoxPrompt seed_placeholder(int64_t category_id);

// SAM's prompts from one image's detections, in the seed's order: the best `max_dets` by score,
// then grouped by class (bbox2result), unclipped (SAM's prompt encoder takes boxes beyond the
// image as they are); classes without a category id (-1) are dropped.
std::vector<BoxPrompt> prompts_from_detections(const std::vector<detect::Detection>& detections,
                                               const std::vector<int64_t>& category_ids,
                                               const DetectionPromptOptions& options);

// COCO results entries ({image_id, category_id, bbox [x, y, w, h], score}) in the seed's order
// (grouped by class); classes without a category id are left out.
nlohmann::json detections_json(int64_t image_id, const std::vector<detect::Detection>& detections,
                               const std::vector<int64_t>& category_ids);

// The image id a file name carries in its last digits, as COCO's 000000397133.jpg (397133) or
// synth-coco's synth_00002.png (2); -1 without digits.
int64_t image_id_of(const std::filesystem::path& file);

// The numbered image files of a folder (id from image_id_of, file name; sizes 0), by file name.
std::vector<coco::Image> numbered_images(const std::string& folder);

}  // namespace ptq4sam::eval
