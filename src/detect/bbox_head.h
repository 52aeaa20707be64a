#pragma once
// mmdetection 2.26's Shared2FCBBoxHead with StandardRoIHead's test path (roi_heads/
// bbox_heads/convfc_bbox_head.py, bbox_head.py get_bboxes, post_processing/bbox_nms.py
// multiclass_nms): two shared FCs with ReLU, a softmax classifier over the classes plus
// background (last) and class-specific deltas with stds (0.1, 0.1, 0.2, 0.2).
#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#include "detect/bbox_coder.h"
#include "detect/detector.h"
#include "io/checkpoint.h"

namespace ptq4sam::detect {

struct RcnnOptions {
  float score_threshold = 0.05f;  // scores strictly above it become candidates
  float nms_iou = 0.5f;
  int64_t max_per_img = 100;
};

// The (RoI, class) pairs the post-processing saw, for tests.
struct RcnnCandidates {
  std::vector<int64_t> index;   // roi * classes + class, ascending
  std::vector<Box> boxes;       // original-image pixels
  std::vector<float> scores;
  std::vector<int64_t> keep;    // candidates kept by the class-wise NMS, descending score (before the cap)
};

class BBoxHead {
 public:
  // `prefix` is "roi_head.bbox_head"; `channels` x roi_size x roi_size is the FCs' input.
  BBoxHead(io::StateDict& state, const std::string& prefix, int64_t channels, int64_t roi_size);
  struct Outputs {
    at::Tensor cls_score;  // (R, classes + 1) logits, background last
    at::Tensor bbox_pred;  // (R, 4 * classes) normalised deltas
  };
  // roi_feats: (R, roi_size, roi_size, C) as kernels::roi_align returns them.
  Outputs forward(const at::Tensor& roi_feats) const;
  int64_t num_classes() const { return num_classes_; }
  int64_t fc_channels() const { return fc2_weight_.size(0); }

  // Detections in original-image pixels, descending score: softmax, decoding against the RoIs
  // (input pixels, clipped to the input of `height` x `width`), division by the scale factor,
  // then multiclass_nms.
  std::vector<Detection> detections(const std::vector<Box>& rois, const Outputs& outputs, int64_t height, int64_t width,
                                    const std::array<float, 4>& scale_factor, const RcnnOptions& options,
                                    RcnnCandidates* candidates = nullptr) const;

 private:
  at::Tensor fc1_weight_, fc1_bias_, fc2_weight_, fc2_bias_, cls_weight_, cls_bias_, reg_weight_, reg_bias_;
  int64_t num_classes_ = 0;
  DeltaCoder coder_{{0.1f, 0.1f, 0.2f, 0.2f}};
};

}  // namespace ptq4sam::detect
