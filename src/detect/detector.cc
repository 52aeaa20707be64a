#include "detect/detector.h"

#include <algorithm>

#include "detect/faster_rcnn.h"
#include "detect/yolox_detector.h"
#include "io/checkpoint.h"
#include "util/error.h"

namespace ptq4sam::detect {

std::unique_ptr<Detector> load_detector(const std::string& path, const DetectorOptions& options) {
  // The checkpoint itself is gone once its model's entries are picked, so that building the
  // model frees each weight as it is folded.
  io::StateDict state;
  {
    const io::StateDict checkpoint = io::load_checkpoint(path);
    if (is_faster_rcnn(checkpoint)) {
      state = faster_rcnn_state_dict(checkpoint);
    } else if (is_yolox(checkpoint)) {
      state = yolox_state_dict(checkpoint);
    } else {
      std::string yolox, faster;
      for (const auto& key : yolox_missing_keys(checkpoint)) yolox += (yolox.empty() ? "" : ", ") + key;
      for (const auto& key : faster_rcnn_missing_keys(checkpoint)) faster += (faster.empty() ? "" : ", ") + key;
      throw Error(path, "not a detector checkpoint: not a YOLOX checkpoint (mmdetection or Megvii layout; missing " +
                            yolox + ") nor a Faster R-CNN one (mmdetection layout; missing " + faster + ")");
    }
  }
  if (state.contains("backbone.conv1.weight")) return std::make_unique<FasterRcnnDetector>(std::move(state), options);
  return std::make_unique<YoloxDetector>(std::move(state), options);
}

DetectorOptions detector_options(float score_threshold, float nms_iou) {
  DetectorOptions options;
  if (score_threshold >= 0) options.score_threshold = score_threshold;
  if (nms_iou >= 0) options.nms_iou = nms_iou;
  return options;
}

int64_t float_tensor_bytes(const io::StateDict& state) {
  int64_t bytes = 0;
  for (const auto& key : state.keys())
    if (state.at(key).is_floating_point()) bytes += int64_t(state.at(key).nbytes());
  return bytes;
}

std::vector<std::string> class_names(int64_t num_classes) {
  if (num_classes == int64_t(coco_class_names().size())) return coco_class_names();
  std::vector<std::string> names;
  for (int64_t i = 0; i < num_classes; ++i) names.push_back("class " + std::to_string(i));
  return names;
}

std::vector<Detection> order_by_class(const std::vector<Detection>& detections) {
  std::vector<Detection> out = detections;
  std::stable_sort(out.begin(), out.end(), [](const Detection& a, const Detection& b) { return a.label < b.label; });
  return out;
}

const std::vector<std::string>& coco_class_names() {
  static const std::vector<std::string> names = {
      "person",        "bicycle",      "car",           "motorcycle",    "airplane",     "bus",
      "train",         "truck",        "boat",          "traffic light", "fire hydrant", "stop sign",
      "parking meter", "bench",        "bird",          "cat",           "dog",          "horse",
      "sheep",         "cow",          "elephant",      "bear",          "zebra",        "giraffe",
      "backpack",      "umbrella",     "handbag",       "tie",           "suitcase",     "frisbee",
      "skis",          "snowboard",    "sports ball",   "kite",          "baseball bat", "baseball glove",
      "skateboard",    "surfboard",    "tennis racket", "bottle",        "wine glass",   "cup",
      "fork",          "knife",        "spoon",         "bowl",          "banana",       "apple",
      "sandwich",      "orange",       "broccoli",      "carrot",        "hot dog",      "pizza",
      "donut",         "cake",         "chair",         "couch",         "potted plant", "bed",
      "dining table",  "toilet",       "tv",            "laptop",        "mouse",        "remote",
      "keyboard",      "cell phone",   "microwave",     "oven",          "toaster",      "sink",
      "refrigerator",  "book",         "clock",         "vase",          "scissors",     "teddy bear",
      "hair drier",    "toothbrush"};
  return names;
}

const std::vector<int64_t>& coco_category_ids() {
  static const std::vector<int64_t> ids = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 13, 14, 15, 16, 17,
                                           18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36,
                                           37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
                                           54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73,
                                           74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90};
  return ids;
}

}  // namespace ptq4sam::detect
