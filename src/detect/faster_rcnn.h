#pragma once
// Faster R-CNN R50-FPN as mmdetection 2.26 runs it at test time (the seed's
// faster_rcnn_r50_fpn_2x_coco.py with its vendored Pad(size_divisor=1)): keep-ratio resize to
// fit 1333 x 800, normalisation with the RGB mean and std, no padding; ResNet, FPN, RPN
// proposals, RoIAlign on P2..P5 and the shared two-FC box head. Float32, as in the seed.
#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#include "detect/bbox_head.h"
#include "detect/detector.h"
#include "detect/fpn.h"
#include "detect/resnet.h"
#include "detect/rpn_head.h"
#include "io/checkpoint.h"

namespace ptq4sam::detect {

struct FasterRcnnConfig {
  int64_t base_channels = 0;      // 64 for ResNet-50
  std::array<int64_t, 4> blocks{};  // 3, 4, 6, 3 for ResNet-50
  int64_t fpn_channels = 0, fc_channels = 0, num_classes = 0;
  // "Faster R-CNN R50-FPN (base 64, FPN 256, fc 1024, 80 classes)".
  std::string describe() const;
};

struct FasterRcnnInput {
  at::Tensor resized_bgr;  // new_h x new_w x 3 uint8
  at::Tensor input;        // (1, 3, new_h, new_w) float32 RGB, normalised, channels-last memory
  std::array<float, 4> scale_factor;
};

// The seed's test pipeline up to the tensor: Resize(1333 x 800, keep_ratio), Normalize(mean
// 123.675 116.28 103.53, std 58.395 57.12 57.375, to_rgb) as OpenCV computes it (float32
// subtraction, float64 multiplication by 1 / std), Pad(size_divisor=1) (none).
FasterRcnnInput faster_rcnn_preprocess(const at::Tensor& bgr);

// Network input value of uint8 value v in RGB channel c (mmcv.imnormalize's rounding).
float faster_rcnn_normalized(int64_t channel, uint8_t value);

// Every intermediate of one detection, for tests and benchmarks.
struct FasterRcnnTrace {
  FasterRcnnInput input;
  std::array<at::Tensor, 4> backbone;  // C2..C5
  std::array<at::Tensor, 5> fpn;       // P2..P6
  RPNHead::Outputs rpn;
  RpnCandidates rpn_candidates;
  Proposals proposals;
  std::vector<int64_t> roi_level;      // 0 (P2) .. 3 (P5) per proposal
  at::Tensor roi_feats;                // (R, 7, 7, C)
  BBoxHead::Outputs head;
  RcnnCandidates rcnn_candidates;
};

class FasterRcnn {
 public:
  // `state` in mmdetection's names (without a "state_dict." prefix); tensors are taken out.
  explicit FasterRcnn(io::StateDict& state);
  const FasterRcnnConfig& config() const { return config_; }
  std::vector<Detection> detect(const at::Tensor& bgr, const RpnOptions& rpn, const RcnnOptions& rcnn,
                                FasterRcnnTrace* trace = nullptr) const;

 private:
  ResNet backbone_;
  FPN neck_;
  RPNHead rpn_head_;
  BBoxHead bbox_head_;
  FasterRcnnConfig config_;
};

// SingleRoIExtractor.map_roi_levels: floor(log2(sqrt(w * h) / 56 + 1e-6)) clamped to [0, 3].
int64_t roi_level(const Box& roi);

class FasterRcnnDetector : public Detector {
 public:
  FasterRcnnDetector(io::StateDict state, const DetectorOptions& options);
  std::vector<Detection> detect(const at::Tensor& bgr) const override { return model_.detect(bgr, rpn_, rcnn_); }
  std::string describe() const override { return model_.config().describe(); }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  float score_threshold() const override { return rcnn_.score_threshold; }
  float nms_iou() const override { return rcnn_.nms_iou; }
  const FasterRcnn& model() const { return model_; }
  std::vector<Detection> detect_traced(const at::Tensor& bgr, FasterRcnnTrace* trace) const {
    return model_.detect(bgr, rpn_, rcnn_, trace);
  }

 private:
  int64_t weight_bytes_;  // before model_, which consumes the dict
  FasterRcnn model_;
  RpnOptions rpn_;
  RcnnOptions rcnn_;
  std::vector<std::string> classes_;
};

// True when the checkpoint's keys look like mmdetection's Faster R-CNN with a ResNet and FPN.
bool is_faster_rcnn(const io::StateDict& checkpoint);
// The model's entries (mmdetection's {'meta', 'state_dict'} or a bare state dict). Throws
// ptq4sam::Error naming the file and the missing keys when it is no Faster R-CNN.
io::StateDict faster_rcnn_state_dict(const io::StateDict& checkpoint);
// Keys every Faster R-CNN has that `checkpoint` lacks (in either wrapping), for error messages.
std::vector<std::string> faster_rcnn_missing_keys(const io::StateDict& checkpoint);

}  // namespace ptq4sam::detect
