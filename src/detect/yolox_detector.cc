#include "detect/yolox_detector.h"

#include <cmath>
#include <opencv2/imgproc.hpp>

#include "util/error.h"

namespace ptq4sam::detect {
namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

LetterboxedImage yolox_letterbox(const at::Tensor& bgr, int64_t size) {
  if (bgr.dim() != 3 || bgr.size(2) != 3 || bgr.scalar_type() != at::kByte || bgr.size(0) < 1 || bgr.size(1) < 1)
    throw Error("YOLOX", "image must be H x W x 3 uint8");
  const int64_t h = bgr.size(0), w = bgr.size(1);
  // mmcv.rescale_size in float64, as Python computes it.
  const double scale = std::min(double(size) / double(std::max(h, w)), double(size) / double(std::min(h, w)));
  LetterboxedImage out;
  out.resized_width = int64_t(double(w) * scale + 0.5);
  out.resized_height = int64_t(double(h) * scale + 0.5);
  if (out.resized_width < 1 || out.resized_height < 1 || out.resized_width > size || out.resized_height > size)
    throw Error("YOLOX", "image of " + std::to_string(w) + " x " + std::to_string(h) + " cannot be resized to fit " +
                             std::to_string(size));
  const at::Tensor contiguous = bgr.contiguous();
  const cv::Mat source(int(h), int(w), CV_8UC3, const_cast<uint8_t*>(contiguous.data_ptr<uint8_t>()));
  cv::Mat resized;
  cv::resize(source, resized, cv::Size(int(out.resized_width), int(out.resized_height)), 0, 0, cv::INTER_LINEAR);
  const float w_scale = float(double(out.resized_width) / double(w));
  const float h_scale = float(double(out.resized_height) / double(h));
  out.scale_factor = {w_scale, h_scale, w_scale, h_scale};
  // HWC uint8 -> (1, 3, size, size) float32, padded bottom and right with 114.
  out.input = at::full({1, 3, size, size}, 114.0f, at::kFloat);
  float* dst = out.input.data_ptr<float>();
  const int64_t plane = size * size;
  for (int64_t y = 0; y < out.resized_height; ++y) {
    const uint8_t* row = resized.ptr<uint8_t>(int(y));
    for (int64_t x = 0; x < out.resized_width; ++x)
      for (int64_t c = 0; c < 3; ++c) dst[c * plane + y * size + x] = float(row[x * 3 + c]);
  }
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

int64_t YoloxDetector::float_bytes(const io::StateDict& state) {
  int64_t bytes = 0;
  for (const auto& key : state.keys())
    if (state.at(key).is_floating_point()) bytes += int64_t(state.at(key).nbytes());
  return bytes;
}

YoloxDetector::YoloxDetector(io::StateDict state, const DetectorOptions& options)
    : weight_bytes_(float_bytes(state)), model_(state), options_(options) {
  const auto& coco = coco_class_names();
  if (model_.config().num_classes == int64_t(coco.size())) {
    classes_ = coco;
  } else {
    for (int64_t i = 0; i < model_.config().num_classes; ++i) classes_.push_back("class " + std::to_string(i));
  }
}

std::vector<Detection> YoloxDetector::postprocess(const std::array<at::Tensor, 3>& raw,
                                                  const std::array<float, 4>& scale_factor,
                                                  YoloxCandidates* candidates) const {
  YoloxCandidates found = yolox_candidates(raw, scale_factor, options_.score_threshold);
  const std::vector<int64_t> keep = batched_nms(found.boxes, found.scores, found.labels, options_.nms_iou);
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
