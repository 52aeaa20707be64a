#pragma once
// mmdetection 2.26's RPNHead at test time (dense_heads/rpn_head.py, the seed's
// faster_rcnn_r50_fpn config): a shared 3x3 convolution with ReLU, 1x1 objectness and delta
// convolutions per FPN level, anchors of strides 4..64 (ratios 0.5, 1, 2, scale 8), and the
// proposal steps of _get_bboxes_single / _bbox_post_process.
#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#include "detect/bbox_coder.h"
#include "io/checkpoint.h"
#include "kernels/conv2d.h"

namespace ptq4sam::detect {

struct RpnOptions {
  int64_t nms_pre = 1000;      // per-level top-k before the NMS
  float nms_iou = 0.7f;
  int64_t max_per_img = 1000;  // proposals kept after it
};

// What the proposal steps saw, for tests: the candidates after the per-level top-k in
// candidate order (levels P2..P6; score order inside a level that had more than nms_pre
// anchors, anchor order otherwise).
struct RpnCandidates {
  std::vector<int64_t> level, anchor_index;
  std::vector<Box> anchors, boxes;  // boxes decoded and clipped
  std::vector<float> scores;        // sigmoid of the logits
  std::vector<char> valid;          // w > 0 and h > 0
  std::vector<int64_t> keep;        // candidates kept by the NMS, descending score
};

struct Proposals {
  std::vector<Box> boxes;        // network-input pixels
  std::vector<float> scores;
  std::vector<int64_t> candidate;  // index into the candidates
};

class RPNHead {
 public:
  // `prefix` is "rpn_head": rpn_conv, rpn_cls, rpn_reg.
  RPNHead(io::StateDict& state, const std::string& prefix, int64_t in_channels);
  // Per level, the objectness logits (1, A, H, W) and deltas (1, 4A, H, W).
  struct Outputs {
    std::array<at::Tensor, 5> cls, reg;
  };
  Outputs forward(const std::array<at::Tensor, 5>& features) const;
  int64_t num_anchors() const { return int64_t(ratios_.size()); }

  // Proposals on an input of `height` x `width` pixels (img_shape).
  Proposals proposals(const Outputs& outputs, int64_t height, int64_t width, const RpnOptions& options,
                      RpnCandidates* candidates = nullptr) const;

 private:
  kernels::Conv2d rpn_conv_, rpn_cls_, rpn_reg_;
  std::vector<float> ratios_{0.5f, 1.0f, 2.0f};
  float anchor_scale_ = 8.0f;
};

// FPN strides of P2..P6.
constexpr std::array<int64_t, 5> kFpnStrides{4, 8, 16, 32, 64};

}  // namespace ptq4sam::detect
