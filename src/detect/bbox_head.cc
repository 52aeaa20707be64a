#include "detect/bbox_head.h"

#include <cmath>

#include "detect/conv_bn.h"
#include "kernels/matmul.h"
#include "util/error.h"

namespace ptq4sam::detect {
namespace {

std::pair<at::Tensor, at::Tensor> take_fc(io::StateDict& state, const std::string& prefix) {
  at::Tensor weight = take_float(state, prefix + ".weight", 2).to(at::kFloat).contiguous();
  at::Tensor bias = take_float(state, prefix + ".bias", 1).to(at::kFloat).contiguous();
  if (bias.size(0) != weight.size(0)) throw Error(state.source(), "'" + prefix + "' has mismatched weight and bias shapes");
  return {weight, bias};
}

}  // namespace

BBoxHead::BBoxHead(io::StateDict& state, const std::string& prefix, int64_t channels, int64_t roi_size) {
  std::tie(fc1_weight_, fc1_bias_) = take_fc(state, prefix + ".shared_fcs.0");
  std::tie(fc2_weight_, fc2_bias_) = take_fc(state, prefix + ".shared_fcs.1");
  std::tie(cls_weight_, cls_bias_) = take_fc(state, prefix + ".fc_cls");
  std::tie(reg_weight_, reg_bias_) = take_fc(state, prefix + ".fc_reg");
  const int64_t fc = fc1_weight_.size(0);
  if (fc1_weight_.size(1) != channels * roi_size * roi_size)
    throw Error(state.source(), "'" + prefix + ".shared_fcs.0.weight' must take " + std::to_string(channels) + " x " +
                                    std::to_string(roi_size) + " x " + std::to_string(roi_size) + " RoI features");
  if (fc2_weight_.size(1) != fc || cls_weight_.size(1) != fc2_weight_.size(0) || reg_weight_.size(1) != fc2_weight_.size(0))
    throw Error(state.source(), "'" + prefix + "' has inconsistent FC widths");
  num_classes_ = cls_weight_.size(0) - 1;
  if (num_classes_ < 1 || reg_weight_.size(0) != 4 * num_classes_)
    throw Error(state.source(), "'" + prefix + "' must have classes + 1 logits and 4 class-specific deltas per class");
  // The features arrive bins-major with channels innermost; mmdetection flattens (C, h, w).
  // Permuting the columns once makes every dot product the same sum in another order.
  fc1_weight_ = fc1_weight_.view({fc, channels, roi_size, roi_size}).permute({0, 2, 3, 1}).reshape({fc, -1}).contiguous();
}

BBoxHead::Outputs BBoxHead::forward(const at::Tensor& roi_feats) const {
  const at::Tensor x = roi_feats.reshape({roi_feats.size(0), fc1_weight_.size(1)});  // also for no RoIs
  using kernels::Activation;
  const at::Tensor h1 = kernels::linear(x, fc1_weight_, fc1_bias_, Activation::kRelu);
  const at::Tensor h2 = kernels::linear(h1, fc2_weight_, fc2_bias_, Activation::kRelu);
  return {kernels::linear(h2, cls_weight_, cls_bias_), kernels::linear(h2, reg_weight_, reg_bias_)};
}

std::vector<Detection> BBoxHead::detections(const std::vector<Box>& rois, const Outputs& outputs, int64_t height,
                                            int64_t width, const std::array<float, 4>& scale_factor,
                                            const RcnnOptions& options, RcnnCandidates* trace) const {
  const int64_t n = int64_t(rois.size()), classes = num_classes_;
  if (outputs.cls_score.size(0) != n || outputs.bbox_pred.size(0) != n)
    throw Error("Faster R-CNN", "one row of head outputs per RoI expected");
  const at::Tensor logits = outputs.cls_score.contiguous(), deltas = outputs.bbox_pred.contiguous();
  const float* l = logits.data_ptr<float>();
  const float* d = deltas.data_ptr<float>();
  RcnnCandidates c;
  std::vector<int64_t> labels;
  std::vector<float> probs(size_t(classes + 1));
  for (int64_t i = 0; i < n; ++i) {
    // Softmax as ATen computes it: shifted by the row's maximum.
    const float* row = l + i * (classes + 1);
    float top = row[0];
    for (int64_t k = 1; k <= classes; ++k) top = std::max(top, row[k]);
    float sum = 0;
    for (int64_t k = 0; k <= classes; ++k) sum += (probs[size_t(k)] = std::exp(row[k] - top));
    const float inv_sum = 1.0f / sum;  // ATen multiplies by the reciprocal
    for (int64_t k = 0; k < classes; ++k) {
      const float score = probs[size_t(k)] * inv_sum;
      if (!(score > options.score_threshold)) continue;
      const Box box = decode_delta(rois[size_t(i)], d + (i * classes + k) * 4, coder_, float(width), float(height));
      c.index.push_back(i * classes + k);
      c.boxes.push_back({box.x0 / scale_factor[0], box.y0 / scale_factor[1], box.x1 / scale_factor[2],
                         box.y1 / scale_factor[3]});
      c.scores.push_back(score);
      labels.push_back(k);
    }
  }
  c.keep = batched_nms(c.boxes, c.scores, labels, options.nms_iou);
  std::vector<Detection> out;
  for (const int64_t k : c.keep) {
    if (int64_t(out.size()) >= options.max_per_img) break;
    out.push_back({c.boxes[size_t(k)], c.scores[size_t(k)], labels[size_t(k)]});
  }
  if (trace) *trace = std::move(c);
  return out;
}

}  // namespace ptq4sam::detect
