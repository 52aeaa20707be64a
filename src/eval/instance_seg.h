#pragma once
// SAM as an instance segmenter: the boxes of one image decoded against one image embedding,
// each mask scored as the seed does (detector score x predicted IoU).
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "eval/prompts.h"
#include "sam/predictor.h"

namespace ptq4sam::eval {

struct ImageSegmentation {
  nlohmann::json results;  // COCO results entries (segm with compressed RLE, bbox, score, category)
  at::Tensor masks;        // (N, H, W) bool, for pictures
};

// image: H x W x 3 RGB uint8. Single-mask output, masks thresholded at 0.0.
ImageSegmentation segment_boxes(sam::Predictor& predictor, const at::Tensor& image, int64_t image_id,
                                const std::vector<BoxPrompt>& boxes);

}  // namespace ptq4sam::eval
