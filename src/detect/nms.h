#pragma once
// Non-maximum suppression with mmcv 1.7's semantics (ops/nms.py batched_nms, cpu/nms.cpp), in
// float32 as mmcv computes it.
#include <cstdint>
#include <vector>

namespace ptq4sam::detect {

struct Box {
  float x0, y0, x1, y1;
};

// The descending-score order the detectors sort by, NaN last (a strict weak order even for the
// NaN scores a hostile checkpoint can produce).
inline bool ranks_before(float a, float b) { return a > b || (a == a && b != b); }

// Greedy NMS: boxes visited by descending score (ties keep their input order), a box is
// suppressed when its IoU with a kept one is > iou_threshold (strictly); IoU = inter / (area_i
// + area_j - inter) with area = (x2 - x1)(y2 - y1) (mmcv's offset 0). Returns the kept indices
// by descending score.
std::vector<int64_t> nms(const std::vector<Box>& boxes, const std::vector<float>& scores, float iou_threshold);

// Class-wise NMS by mmcv's coordinate trick: every box is shifted by label x (largest
// coordinate of all boxes + 1), then one NMS runs over all of them (mmcv does so below its
// split threshold of 10000 boxes; above it, per class, which keeps the same boxes).
std::vector<int64_t> batched_nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                 const std::vector<int64_t>& labels, float iou_threshold);

}  // namespace ptq4sam::detect
