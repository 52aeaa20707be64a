#pragma once
// YOLOX as mmdetection 2.26 runs it at test time (the seed's yolox_l_8x8_300e_coco.py):
// keep-ratio resize into 640 x 640, padding with 114, no normalisation; decoding with priors of
// offset 0, score = sigmoid(obj) x the best sigmoid(cls), threshold, boxes back to original
// pixels, class-wise NMS; no cap per image.
#include <ATen/ATen.h>

#include <array>
#include <vector>

#include "detect/detector.h"
#include "detect/yolox.h"

namespace ptq4sam::detect {

struct LetterboxedImage {
  at::Tensor input;                    // (1, 3, size, size) float32, BGR 0..255, padded with 114
  std::array<float, 4> scale_factor;   // [new_w / w, new_h / h, new_w / w, new_h / h]
  int64_t resized_height = 0, resized_width = 0;
};

// mmcv's imrescale + impad as the seed's pipeline applies them: scale = min(size / long side,
// size / short side), new size int(x * scale + 0.5), cv2.resize INTER_LINEAR on the uint8
// image, then bottom and right padding to a size x size square.
LetterboxedImage yolox_letterbox(const at::Tensor& bgr, int64_t size = 640);

struct YoloxCandidates {
  std::vector<int64_t> prior_index;  // among the flattened priors (stride 8, 16, 32; row-major)
  std::vector<Box> boxes;            // divided by the scale factor: original-image pixels
  std::vector<float> scores;
  std::vector<int64_t> labels;
};

// The priors whose score passes `score_threshold` (>=), ascending prior index.
YoloxCandidates yolox_candidates(const std::array<at::Tensor, 3>& raw, const std::array<float, 4>& scale_factor,
                                 float score_threshold);

class YoloxDetector : public Detector {
 public:
  // Takes the model's tensors out of `state` as it builds (pass it by move to free them).
  YoloxDetector(io::StateDict state, const DetectorOptions& options);
  std::vector<Detection> detect(const at::Tensor& bgr) const override;
  std::string describe() const override { return model_.config().describe(); }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  float score_threshold() const override { return score_threshold_; }
  float nms_iou() const override { return nms_iou_; }
  const Yolox& model() const { return model_; }

  // The steps of detect(), for tests and benchmarks.
  std::array<at::Tensor, 3> raw_outputs(const LetterboxedImage& image) const { return model_.forward(image.input); }
  std::vector<Detection> postprocess(const std::array<at::Tensor, 3>& raw, const std::array<float, 4>& scale_factor,
                                     YoloxCandidates* candidates = nullptr) const;

 private:
  int64_t weight_bytes_;  // before model_, which consumes the dict
  Yolox model_;
  float score_threshold_, nms_iou_;
  std::vector<std::string> classes_;
};

}  // namespace ptq4sam::detect
