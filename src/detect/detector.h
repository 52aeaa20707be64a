#pragma once
// Box detectors that prompt SAM, as the PTQ4SAM seed runs them (float32, mmdetection 2.26's
// pre- and post-processing). One interface, so that `detect`, `eval --detector` and
// `quantize --calib-detector` take any of them.
#include <ATen/ATen.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "detect/nms.h"
#include "io/checkpoint.h"

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
  // The thresholds it runs with: its final score threshold and class-wise NMS IoU.
  virtual float score_threshold() const = 0;
  virtual float nms_iou() const = 0;
};

// Unset values take the detector's own test_cfg in the seed: score 0.05 for both (upstream
// mmdetection's YOLOX: 0.01); NMS IoU 0.65 for YOLOX, 0.5 for Faster R-CNN.
struct DetectorOptions {
  std::optional<float> score_threshold;
  std::optional<float> nms_iou;
};

// Options from command-line values where a negative value means "the detector's own".
DetectorOptions detector_options(float score_threshold, float nms_iou);

// Recognises the detector from the checkpoint's keys: YOLOX in mmdetection's or Megvii's
// layout, Faster R-CNN in mmdetection's; legacy or zip torch.save. Throws ptq4sam::Error naming
// the file and what each detector's layout misses otherwise.
std::unique_ptr<Detector> load_detector(const std::string& path, const DetectorOptions& options = {});

// The seed's DetectorWrapper order: grouped by label ascending, detector order inside a label
// (mmdetection's bbox2result, then the concatenation of its per-class arrays).
std::vector<Detection> order_by_class(const std::vector<Detection>& detections);

// Bytes of the float tensors of a state dict.
int64_t float_tensor_bytes(const io::StateDict& state);

// COCO's names for 80 classes, "class <i>" otherwise.
std::vector<std::string> class_names(int64_t num_classes);

// COCO's 80 class names (mmdetection's CocoDataset.CLASSES) and their category ids in
// instances_*.json (1..90 with gaps).
const std::vector<std::string>& coco_class_names();
const std::vector<int64_t>& coco_category_ids();

}  // namespace ptq4sam::detect
