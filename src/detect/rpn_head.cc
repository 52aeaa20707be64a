#include "detect/rpn_head.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "detect/conv_bn.h"
#include "util/error.h"

namespace ptq4sam::detect {

RPNHead::RPNHead(io::StateDict& state, const std::string& prefix, int64_t in_channels)
    : rpn_conv_(load_conv(state, prefix + ".rpn_conv", 1, kernels::ConvActivation::kRelu)),
      rpn_cls_(load_conv(state, prefix + ".rpn_cls")),
      rpn_reg_(load_conv(state, prefix + ".rpn_reg")) {
  const int64_t anchors = num_anchors();
  if (rpn_conv_.in_channels() != in_channels || rpn_conv_.kernel_size() != 3 ||
      rpn_cls_.in_channels() != rpn_conv_.out_channels() || rpn_reg_.in_channels() != rpn_conv_.out_channels())
    throw Error(state.source(), "'" + prefix + "' needs a 3x3 rpn_conv on " + std::to_string(in_channels) +
                                    " channels feeding rpn_cls and rpn_reg");
  if (rpn_cls_.out_channels() != anchors || rpn_reg_.out_channels() != 4 * anchors)
    throw Error(state.source(), "'" + prefix + "' must predict " + std::to_string(anchors) + " objectness logits and " +
                                    std::to_string(4 * anchors) + " deltas per position (sigmoid RPN, 3 anchors)");
}

RPNHead::Outputs RPNHead::forward(const std::array<at::Tensor, 5>& features) const {
  Outputs out;
  for (size_t level = 0; level < 5; ++level) {
    const at::Tensor x = rpn_conv_.forward(features[level]);
    out.cls[level] = rpn_cls_.forward(x);
    out.reg[level] = rpn_reg_.forward(x);
  }
  return out;
}

namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

Proposals RPNHead::proposals(const Outputs& outputs, int64_t height, int64_t width, const RpnOptions& options,
                             RpnCandidates* trace) const {
  RpnCandidates c;
  std::vector<std::array<float, 4>> deltas;
  const int64_t a = num_anchors();
  for (size_t level = 0; level < 5; ++level) {
    // (A, H, W) -> (H, W, A): index (row * W + col) * A + anchor; deltas anchor * 4 + (dx, dy, dw, dh).
    const at::Tensor cls = outputs.cls[level][0].permute({1, 2, 0}).contiguous();
    const at::Tensor reg = outputs.reg[level][0].permute({1, 2, 0}).contiguous();
    const int64_t h = cls.size(0), w = cls.size(1), n = h * w * a;
    const float* logits = cls.data_ptr<float>();
    const float* delta = reg.data_ptr<float>();
    std::vector<float> scores(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) scores[size_t(i)] = sigmoid(logits[i]);
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    if (options.nms_pre > 0 && n > options.nms_pre) {
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return ranks_before(scores[size_t(x)], scores[size_t(y)]); });
      order.resize(size_t(options.nms_pre));
    }
    const std::vector<Box> anchors = level_anchors(kFpnStrides[level], h, w, ratios_, anchor_scale_);
    for (const int64_t i : order) {
      c.level.push_back(int64_t(level));
      c.anchor_index.push_back(i);
      c.anchors.push_back(anchors[size_t(i)]);
      c.scores.push_back(scores[size_t(i)]);
      deltas.push_back({delta[i * 4], delta[i * 4 + 1], delta[i * 4 + 2], delta[i * 4 + 3]});
    }
  }
  std::vector<Box> valid_boxes;
  std::vector<float> valid_scores;
  std::vector<int64_t> valid_levels, valid_index;
  for (size_t i = 0; i < c.anchors.size(); ++i) {
    const Box box = decode_delta(c.anchors[i], deltas[i].data(), DeltaCoder{}, float(width), float(height));
    c.boxes.push_back(box);
    // min_bbox_size 0: boxes of zero width or height after clipping go.
    const bool valid = box.x1 - box.x0 > 0.0f && box.y1 - box.y0 > 0.0f;
    c.valid.push_back(valid);
    if (!valid) continue;
    valid_boxes.push_back(box);
    valid_scores.push_back(c.scores[i]);
    valid_levels.push_back(c.level[i]);
    valid_index.push_back(int64_t(i));
  }
  // Levels as classes: boxes of different levels never suppress each other.
  const std::vector<int64_t> keep = batched_nms(valid_boxes, valid_scores, valid_levels, options.nms_iou);
  Proposals out;
  for (const int64_t k : keep) {
    c.keep.push_back(valid_index[size_t(k)]);
    if (int64_t(out.boxes.size()) >= options.max_per_img) continue;
    out.boxes.push_back(valid_boxes[size_t(k)]);
    out.scores.push_back(valid_scores[size_t(k)]);
    out.candidate.push_back(valid_index[size_t(k)]);
  }
  if (trace) *trace = std::move(c);
  return out;
}

}  // namespace ptq4sam::detect
