#include "detect/yolox_detector.h"

#include <cmath>

#include "detect/keep_ratio_resize.h"
#include "util/error.h"

namespace ptq4sam::detect {
namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

LetterboxedImage yolox_letterbox(const at::Tensor& bgr, int64_t size) {
  const KeepRatioResized resized = keep_ratio_resize(bgr, size, size, "YOLOX");
  LetterboxedImage out;
  out.resized_height = resized.bgr.size(0);
  out.resized_width = resized.bgr.size(1);
  out.scale_factor = resized.scale_factor;
  // HWC uint8 -> (1, 3, size, size) float32, padded bottom and right with 114.
  out.input = at::full({1, 3, size, size}, 114.0f, at::kFloat);
  out.input.index_put_({0, at::indexing::Slice(), at::indexing::Slice(0, out.resized_height),
                        at::indexing::Slice(0, out.resized_width)},
                       resized.bgr.permute({2, 0, 1}).to(at::kFloat));
  return out;
}

YoloxCandidates yolox_candidates(const std::array<at::Tensor, 3>& raw, const std::array<float, 4>& scale_factor,
                                 float score_threshold) {
  YoloxCandidates out;
  int64_t prior = 0;
  const int64_t strides[3] = {8, 16, 32};
  for (size_t level = 0; level < 3; ++level) {
    const at::Tensor map = raw[level].contiguous();
    const int64_t channels = map.size(1), height = map.size(2), width = map.size(3), plane = height * width;
    const int64_t classes = channels - 5;
    const float* p = map.data_ptr<float>();
    const float stride = float(strides[level]);
    for (int64_t row = 0; row < height; ++row) {
      for (int64_t col = 0; col < width; ++col, ++prior) {
        const int64_t at = row * width + col;
        // torch.max over classes: the first of equal maxima.
        int64_t label = 0;
        float best = sigmoid(p[5 * plane + at]);
        for (int64_t c = 1; c < classes; ++c) {
          const float s = sigmoid(p[(5 + c) * plane + at]);
          if (s > best) {
            best = s;
            label = c;
          }
        }
        const float score = sigmoid(p[4 * plane + at]) * best;
        if (!(score >= score_threshold)) continue;
        // mmdet's _bbox_decode: xy = pred * stride + prior, wh = exp(pred) * stride.
        const float cx = p[0 * plane + at] * stride + float(col) * stride;
        const float cy = p[1 * plane + at] * stride + float(row) * stride;
        const float bw = std::exp(p[2 * plane + at]) * stride;
        const float bh = std::exp(p[3 * plane + at]) * stride;
        out.prior_index.push_back(prior);
        out.boxes.push_back({(cx - bw / 2) / scale_factor[0], (cy - bh / 2) / scale_factor[1],
                             (cx + bw / 2) / scale_factor[2], (cy + bh / 2) / scale_factor[3]});
        out.scores.push_back(score);
        out.labels.push_back(label);
      }
    }
  }
  return out;
}

YoloxDetector::YoloxDetector(io::StateDict state, const DetectorOptions& options)
    : weight_bytes_(float_tensor_bytes(state)),
      model_(state),
      score_threshold_(options.score_threshold.value_or(0.05f)),
      nms_iou_(options.nms_iou.value_or(0.65f)),
      classes_(class_names(model_.config().num_classes)) {}

std::vector<Detection> YoloxDetector::postprocess(const std::array<at::Tensor, 3>& raw,
                                                  const std::array<float, 4>& scale_factor,
                                                  YoloxCandidates* candidates) const {
  YoloxCandidates found = yolox_candidates(raw, scale_factor, score_threshold_);
  const std::vector<int64_t> keep = batched_nms(found.boxes, found.scores, found.labels, nms_iou_);
  std::vector<Detection> out;
  out.reserve(keep.size());
  for (const int64_t k : keep) out.push_back({found.boxes[size_t(k)], found.scores[size_t(k)], found.labels[size_t(k)]});
  if (candidates) *candidates = std::move(found);
  return out;
}

std::vector<Detection> YoloxDetector::detect(const at::Tensor& bgr) const {
  const LetterboxedImage image = yolox_letterbox(bgr);
  return postprocess(raw_outputs(image), image.scale_factor);
}

}  // namespace ptq4sam::detect
