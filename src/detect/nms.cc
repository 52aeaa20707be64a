#include "detect/nms.h"

#include <algorithm>
#include <numeric>

#include "util/error.h"

namespace ptq4sam::detect {

std::vector<int64_t> nms(const std::vector<Box>& boxes, const std::vector<float>& scores, float iou_threshold) {
  if (boxes.size() != scores.size()) throw Error("nms", "needs one score per box");
  std::vector<int64_t> order(boxes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ranks_before(scores[size_t(a)], scores[size_t(b)]); });
  std::vector<float> areas(boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) areas[i] = (boxes[i].x1 - boxes[i].x0) * (boxes[i].y1 - boxes[i].y0);
  std::vector<char> suppressed(boxes.size(), 0);
  std::vector<int64_t> keep;
  for (size_t oi = 0; oi < order.size(); ++oi) {
    const size_t i = size_t(order[oi]);
    if (suppressed[i]) continue;
    keep.push_back(int64_t(i));
    const Box& a = boxes[i];
    for (size_t oj = oi + 1; oj < order.size(); ++oj) {
      const size_t j = size_t(order[oj]);
      if (suppressed[j]) continue;
      const Box& b = boxes[j];
      const float w = std::max(0.0f, std::min(a.x1, b.x1) - std::max(a.x0, b.x0));
      const float h = std::max(0.0f, std::min(a.y1, b.y1) - std::max(a.y0, b.y0));
      const float inter = w * h;
      const float iou = inter / (areas[i] + areas[j] - inter);
      if (iou > iou_threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

std::vector<int64_t> batched_nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                 const std::vector<int64_t>& labels, float iou_threshold) {
  if (boxes.empty()) return {};
  if (labels.size() != boxes.size()) throw Error("batched_nms", "needs one label per box");
  float largest = boxes[0].x0;
  for (const Box& b : boxes) largest = std::max({largest, b.x0, b.y0, b.x1, b.y1});
  const float step = largest + 1.0f;
  std::vector<Box> shifted(boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) {
    const float offset = float(labels[i]) * step;
    shifted[i] = {boxes[i].x0 + offset, boxes[i].y0 + offset, boxes[i].x1 + offset, boxes[i].y1 + offset};
  }
  return nms(shifted, scores, iou_threshold);
}

}  // namespace ptq4sam::detect
