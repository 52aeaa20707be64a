#pragma once
// Box prompts per image for instance segmentation: a detector's results (COCO results format)
// or the ground-truth boxes.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "coco/dataset.h"

namespace ptq4sam::eval {

struct BoxPrompt {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // clipped to the image
  double score = 1;
  int64_t category_id = 0;
};

struct PromptOptions {
  double score_threshold = 0.0;  // detections below are dropped
  int max_dets = 100;            // per image, highest scores first
};

// Per image id, sorted by score (stable), at most max_dets, boxes clipped to the image.
// "gt" (source == "gt") uses every non-crowd ground-truth box with score 1. Throws
// ptq4sam::Error naming the file for detections of unknown images or categories, NaN,
// negative or empty boxes, and malformed JSON.
std::unordered_map<int64_t, std::vector<BoxPrompt>> load_box_prompts(const std::string& source,
                                                                     const coco::Dataset& gt,
                                                                     const PromptOptions& options);

}  // namespace ptq4sam::eval
