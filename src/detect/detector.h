#pragma once
// Box detectors that prompt SAM, as the PTQ4SAM seed runs them (float32, mmdetection 2.26's
// pre- and post-processing). One interface, so that `detect`, `eval --detector` and
// `quantize --calib-detector` take any of them.
#include <ATen/ATen.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "detect/nms.h"

namespace ptq4sam::detect {

struct Detection {
  Box box;          // x0, y0, x1, y1 in original-image pixels; not clipped (it may leave the image)
  float score = 0;  // as the detector reports it
  int64_t label = 0;  // index into the detector's classes (COCO's 80 for the seed's detectors)
};

class Detector {
 public:
  virtual ~Detector() = default;
  // image: H x W x 3 uint8 in BGR order (as OpenCV decodes it). Detections in the detector's
  // output order (descending score for YOLOX).
  virtual std::vector<Detection> detect(const at::Tensor& bgr) const = 0;
  // "YOLOX-L (depth 1.00, width 1.00, 80 classes)".
  virtual std::string describe() const = 0;
  // Class names, indexed by Detection::label.
  virtual const std::vector<std::string>& classes() const = 0;
  // Bytes of the model's float tensors in its checkpoint (batch-norm statistics included).
  virtual int64_t weight_bytes() const = 0;
};

struct DetectorOptions {
  float score_threshold = 0.05f;  // the seed's test_cfg (upstream mmdetection's YOLOX: 0.01)
  float nms_iou = 0.65f;
};

// Recognises the detector from the checkpoint's keys (YOLOX in mmdetection's or Megvii's
// layout, legacy or zip torch.save). Throws ptq4sam::Error naming the file otherwise.
std::unique_ptr<Detector> load_detector(const std::string& path, const DetectorOptions& options = {});

// The seed's DetectorWrapper order: grouped by label ascending, detector order inside a label
// (mmdetection's bbox2result, then the concatenation of its per-class arrays).
std::vector<Detection> order_by_class(const std::vector<Detection>& detections);

// COCO's 80 class names (mmdetection's CocoDataset.CLASSES) and their category ids in
// instances_*.json (1..90 with gaps).
const std::vector<std::string>& coco_class_names();
const std::vector<int64_t>& coco_category_ids();

}  // namespace ptq4sam::detect
