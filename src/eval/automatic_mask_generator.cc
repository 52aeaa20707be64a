#include "eval/automatic_mask_generator.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>

#include "detect/nms.h"
#include "util/error.h"

namespace ptq4sam::eval {
namespace {

int64_t int_pow(int64_t base, int64_t exponent) {
  int64_t result = 1;
  for (int64_t i = 0; i < exponent; ++i) result *= base;
  return result;
}

// batched_mask_to_box over an h x w row-major mask (row stride `stride`): first and last
// column and row holding a pixel; [0, 0, 0, 0] when empty.
AmgBox mask_box(const uint8_t* mask, int64_t h, int64_t w, int64_t stride) {
  int64_t left = w, right = -1, top = h, bottom = -1;
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* row = mask + y * stride;
    int64_t first = -1, last = -1;
    for (int64_t x = 0; x < w; ++x)
      if (row[x]) {
        if (first < 0) first = x;
        last = x;
      }
    if (first < 0) continue;
    top = std::min(top, y);
    bottom = y;
    left = std::min(left, first);
    right = std::max(right, last);
  }
  if (right < left || bottom < top) return {0, 0, 0, 0};
  return {left, top, right, bottom};
}

detect::Box as_nms_box(const AmgBox& b) { return {float(b[0]), float(b[1]), float(b[2]), float(b[3])}; }

// is_box_near_crop_edge (atol 20 px): a side within 20 px of the crop's side, unless it is also
// within 20 px of the image's.
bool near_crop_edge(const AmgBox& box, const AmgBox& crop, int64_t height, int64_t width) {
  const int64_t image[4] = {0, 0, width, height};
  const int64_t offset[4] = {crop[0], crop[1], crop[0], crop[1]};
  for (int k = 0; k < 4; ++k) {
    const int64_t side = box[k] + offset[k];
    if (std::llabs(side - crop[k]) <= 20 && std::llabs(side - image[k]) > 20) return true;
  }
  return false;
}

// The masks of one batch of points, as _process_batch keeps them: every point's three masks,
// filtered by predicted IoU and stability, thresholded, off the crop's inner edges, uncropped
// and run-length encoded.
void process_batch(const sam::Predictor& predictor, const std::vector<std::array<double, 2>>& points, size_t start,
                   size_t count, const AmgBox& crop, int64_t height, int64_t width, const AmgOptions& o,
                   std::vector<AmgMask>& out) {
  const int64_t crop_h = crop[3] - crop[1], crop_w = crop[2] - crop[0];
  at::Tensor coords = at::empty({int64_t(count), 1, 2}, at::kDouble);
  auto c = coords.accessor<double, 3>();
  for (size_t i = 0; i < count; ++i) {
    c[int64_t(i)][0][0] = points[start + i][0];
    c[int64_t(i)][0][1] = points[start + i][1];
  }
  // Float64 into the prompt encoder, as the official passes numpy's points.
  coords = predictor.transform().apply_coords(coords, {crop_h, crop_w});
  const at::Tensor labels = at::ones({int64_t(count), 1}, at::kInt);
  // The whole batch through the decoder at once, as the official (a batch's float32 sums
  // depend on its size); the masks upscaled one point at a time, which gives the same numbers.
  const auto [low_res, iou] = predictor.decode(coords, labels, {}, {}, /*multimask_output=*/true);
  const at::Tensor iou_values = iou.contiguous();
  const auto iou_of = iou_values.accessor<float, 2>();
  const float iou_thresh = float(o.pred_iou_thresh), stability_thresh = float(o.stability_score_thresh);
  const float high = float(sam::Sam::kMaskThreshold + o.stability_score_offset);
  const float low = float(sam::Sam::kMaskThreshold - o.stability_score_offset);
  std::vector<uint8_t> binary(size_t(crop_h * crop_w)), full;
  for (size_t i = 0; i < count; ++i) {
    // Only the masks that pass the IoU filter are upscaled (each mask's numbers are its own).
    std::vector<int64_t> kept;
    for (int64_t k = 0; k < iou_values.size(1); ++k)
      if (!(o.pred_iou_thresh > 0.0) || iou_of[int64_t(i)][k] > iou_thresh) kept.push_back(k);
    if (kept.empty()) continue;
    const at::Tensor logits =
        predictor.upscale(low_res.narrow(0, int64_t(i), 1).index_select(1, at::tensor(kept, at::kLong)))[0].contiguous();
    for (size_t slot = 0; slot < kept.size(); ++slot) {
      const int64_t k = kept[slot];
      const float predicted_iou = iou_of[int64_t(i)][k];
      const float* l = logits[int64_t(slot)].data_ptr<float>();
      int64_t intersection = 0, union_ = 0;
      for (int64_t p = 0; p < crop_h * crop_w; ++p) {
        intersection += l[p] > high;
        union_ += l[p] > low;
      }
      const float stability = float(intersection) / float(union_);  // 0 / 0 is NaN, as torch's
      if (o.stability_score_thresh > 0.0 && !(stability >= stability_thresh)) continue;
      for (int64_t p = 0; p < crop_h * crop_w; ++p) binary[size_t(p)] = l[p] > sam::Sam::kMaskThreshold;
      const AmgBox box = mask_box(binary.data(), crop_h, crop_w, crop_w);
      if (near_crop_edge(box, crop, height, width)) continue;

      AmgMask mask;  // box and point in the crop's frame until its NMS
      if (crop_h == height && crop_w == width) {
        mask.segmentation = coco::encode(binary.data(), height, width);
      } else {
        full.assign(size_t(height * width), 0);
        for (int64_t y = 0; y < crop_h; ++y)
          std::copy_n(binary.data() + y * crop_w, crop_w, full.data() + (y + crop[1]) * width + crop[0]);
        mask.segmentation = coco::encode(full.data(), height, width);
      }
      mask.box = box;
      mask.predicted_iou = predicted_iou;
      mask.stability_score = stability;
      mask.point_x = points[start + i][0];
      mask.point_y = points[start + i][1];
      out.push_back(std::move(mask));
    }
  }
}

// _process_crop: the crop embedded, its points in batches, NMS within it, back to the image's frame.
std::vector<AmgMask> process_crop(sam::Predictor& predictor, const at::Tensor& image, const AmgBox& crop,
                                  const std::vector<std::array<double, 2>>& grid, const AmgOptions& o,
                                  size_t& batches_done, size_t batches_total, const AmgProgress& progress) {
  const int64_t height = image.size(0), width = image.size(1);
  predictor.set_image(image.slice(0, crop[1], crop[3]).slice(1, crop[0], crop[2]).contiguous());
  const int64_t crop_h = crop[3] - crop[1], crop_w = crop[2] - crop[0];
  std::vector<std::array<double, 2>> points;
  for (const auto& g : grid) points.push_back({g[0] * double(crop_w), g[1] * double(crop_h)});

  std::vector<AmgMask> candidates;
  for (size_t start = 0; start < points.size(); start += size_t(o.points_per_batch)) {
    const size_t count = std::min(size_t(o.points_per_batch), points.size() - start);
    process_batch(predictor, points, start, count, crop, height, width, o, candidates);
    if (progress) progress(++batches_done, batches_total);
  }
  predictor.reset_image();

  std::vector<detect::Box> boxes;
  std::vector<float> scores;
  for (const auto& c : candidates) {
    boxes.push_back(as_nms_box(c.box));
    scores.push_back(c.predicted_iou);
  }
  std::vector<AmgMask> kept;
  for (const int64_t i : detect::nms(boxes, scores, float(o.box_nms_thresh))) {
    AmgMask mask = std::move(candidates[size_t(i)]);
    for (int k = 0; k < 4; ++k) mask.box[k] += crop[k % 2];
    mask.point_x += double(crop[0]);
    mask.point_y += double(crop[1]);
    mask.crop_box = crop;
    kept.push_back(std::move(mask));
  }
  return kept;
}

std::vector<AmgMask> select(std::vector<AmgMask>& masks, const std::vector<int64_t>& keep) {
  std::vector<AmgMask> kept;
  for (const int64_t i : keep) kept.push_back(std::move(masks[size_t(i)]));
  return kept;
}

// postprocess_small_regions: holes, then islands, below min_area removed; NMS prefers masks that
// needed no change; kept changed masks take their new RLE and box.
std::vector<AmgMask> postprocess_small_regions(std::vector<AmgMask> masks, int64_t min_area, double nms_thresh) {
  std::vector<detect::Box> boxes;
  std::vector<float> scores;
  std::vector<std::optional<std::pair<coco::Rle, AmgBox>>> changed(masks.size());
  for (size_t i = 0; i < masks.size(); ++i) {
    const int64_t h = masks[i].segmentation.h, w = masks[i].segmentation.w;
    std::vector<uint8_t> mask = coco::decode(masks[i].segmentation);
    const bool holes = remove_small_regions(mask, h, w, double(min_area), true);
    const bool islands = remove_small_regions(mask, h, w, double(min_area), false);
    const AmgBox box = mask_box(mask.data(), h, w, w);
    if (holes || islands) changed[i] = std::make_pair(coco::encode(mask.data(), h, w), box);
    boxes.push_back(as_nms_box(box));
    scores.push_back(holes || islands ? 0.0f : 1.0f);
  }
  const std::vector<int64_t> keep = detect::nms(boxes, scores, float(nms_thresh));
  for (const int64_t i : keep)
    if (changed[size_t(i)]) {
      masks[size_t(i)].segmentation = std::move(changed[size_t(i)]->first);
      masks[size_t(i)].box = changed[size_t(i)]->second;
    }
  return select(masks, keep);
}

}  // namespace

void check_options(const AmgOptions& o) {
  const auto require = [](bool ok, const std::string& option, const std::string& problem) {
    if (!ok) throw Error("--" + option, problem);
  };
  require(o.points_per_side >= 1 && o.points_per_side <= 1024, "points-per-side", "must be in 1..1024");
  require(o.points_per_batch >= 1 && o.points_per_batch <= 4096, "points-per-batch", "must be in 1..4096");
  require(std::isfinite(o.pred_iou_thresh), "pred-iou-thresh", "must be a finite number");
  require(o.stability_score_thresh >= 0 && o.stability_score_thresh <= 1, "stability-score-thresh", "must be in [0, 1]");
  require(std::isfinite(o.stability_score_offset) && o.stability_score_offset >= 0, "stability-score-offset",
          "must be a finite number >= 0");
  require(o.box_nms_thresh >= 0 && o.box_nms_thresh <= 1, "box-nms-thresh", "must be in [0, 1]");
  require(o.crop_n_layers >= 0 && o.crop_n_layers <= 4, "crop-n-layers", "must be in 0..4");
  require(o.crop_nms_thresh >= 0 && o.crop_nms_thresh <= 1, "crop-nms-thresh", "must be in [0, 1]");
  require(o.crop_overlap_ratio >= 0 && o.crop_overlap_ratio < 1, "crop-overlap-ratio", "must be in [0, 1)");
  require(o.crop_n_points_downscale_factor >= 1 && o.crop_n_points_downscale_factor <= 16,
          "crop-n-points-downscale-factor", "must be in 1..16");
  require(o.min_mask_region_area >= 0, "min-mask-region-area", "must be >= 0");
  for (int64_t layer = 0; layer <= o.crop_n_layers; ++layer)
    require(int64_t(double(o.points_per_side) / double(int_pow(o.crop_n_points_downscale_factor, layer))) >= 1,
            "crop-n-points-downscale-factor",
            "leaves crop layer " + std::to_string(layer) + " without points (points-per-side " +
                std::to_string(o.points_per_side) + ")");
}

std::vector<std::array<double, 2>> point_grid(int64_t n) {
  // numpy.linspace(offset, 1 - offset, n): start + i * step, the last one exactly the stop.
  const double offset = 1.0 / double(2 * n), stop = 1.0 - offset;
  std::vector<double> side(static_cast<size_t>(n));
  const double step = n > 1 ? (stop - offset) / double(n - 1) : 0.0;
  for (int64_t i = 0; i < n; ++i) side[size_t(i)] = double(i) * step + offset;
  if (n > 1) side.back() = stop;
  std::vector<std::array<double, 2>> points;
  for (int64_t y = 0; y < n; ++y)
    for (int64_t x = 0; x < n; ++x) points.push_back({side[size_t(x)], side[size_t(y)]});
  return points;
}

std::vector<std::pair<AmgBox, int64_t>> crop_boxes(int64_t height, int64_t width, int64_t n_layers, double overlap_ratio) {
  std::vector<std::pair<AmgBox, int64_t>> crops = {{{0, 0, width, height}, 0}};
  const int64_t short_side = std::min(height, width);
  const auto crop_len = [](int64_t length, int64_t n, int64_t overlap) {
    return int64_t(std::ceil(double(overlap * (n - 1) + length) / double(n)));
  };
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    const int64_t n = int64_t(1) << (layer + 1);
    const auto overlap = int64_t(overlap_ratio * double(short_side) * (2.0 / double(n)));
    const int64_t crop_w = crop_len(width, n, overlap), crop_h = crop_len(height, n, overlap);
    for (int64_t i = 0; i < n; ++i)      // x0 outer, y0 inner: itertools.product's order
      for (int64_t j = 0; j < n; ++j) {
        const auto x0 = int64_t(double(crop_w - overlap) * double(i)), y0 = int64_t(double(crop_h - overlap) * double(j));
        crops.push_back({{x0, y0, std::min(x0 + crop_w, width), std::min(y0 + crop_h, height)}, layer + 1});
      }
  }
  return crops;
}

bool remove_small_regions(std::vector<uint8_t>& mask, int64_t h, int64_t w, double min_area, bool holes) {
  // Holes are the regions of the inverted mask; its label 0 is the mask itself.
  cv::Mat working(int(h), int(w), CV_8U);
  for (int64_t p = 0; p < h * w; ++p) working.data[p] = uint8_t((mask[size_t(p)] != 0) != holes);
  cv::Mat labels, stats, centroids;
  const int n_labels = cv::connectedComponentsWithStats(working, labels, stats, centroids, 8);
  std::vector<uint8_t> fill(size_t(n_labels), 0);  // labels that become the new mask
  bool any_small = false;
  int largest = 1;
  for (int label = 1; label < n_labels; ++label) {
    const int area = stats.at<int>(label, cv::CC_STAT_AREA);
    if (double(area) < min_area) {
      any_small = true;
      fill[size_t(label)] = 1;
    }
    if (area > stats.at<int>(largest, cv::CC_STAT_AREA)) largest = label;
  }
  if (!any_small) return false;
  if (holes) {
    fill[0] = 1;  // the mask's own pixels, with the small holes filled
  } else {
    // Islands: keep the regions that are not small; if none is, keep the largest.
    bool kept_any = false;
    for (int label = 0; label < n_labels; ++label) {
      fill[size_t(label)] = label > 0 && !fill[size_t(label)];
      kept_any = kept_any || fill[size_t(label)];
    }
    if (!kept_any) fill[size_t(largest)] = 1;
  }
  for (int64_t p = 0; p < h * w; ++p) mask[size_t(p)] = fill[size_t(labels.at<int>(int(p / w), int(p % w)))];
  return true;
}

std::vector<AmgMask> generate_masks(sam::Predictor& predictor, const at::Tensor& image, const AmgOptions& o,
                                    const AmgProgress& progress) {
  check_options(o);
  if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != at::kByte || image.size(0) < 1 || image.size(1) < 1)
    throw Error("generate_masks", "expected an H x W x 3 uint8 RGB image");
  const int64_t height = image.size(0), width = image.size(1);
  const auto crops = crop_boxes(height, width, o.crop_n_layers, o.crop_overlap_ratio);
  std::vector<std::vector<std::array<double, 2>>> grids;
  for (int64_t layer = 0; layer <= o.crop_n_layers; ++layer)
    grids.push_back(point_grid(int64_t(double(o.points_per_side) / double(int_pow(o.crop_n_points_downscale_factor, layer)))));
  size_t batches_total = 0, batches_done = 0;
  for (const auto& [crop, layer] : crops)
    batches_total += (grids[size_t(layer)].size() + size_t(o.points_per_batch) - 1) / size_t(o.points_per_batch);

  std::vector<AmgMask> masks;
  for (const auto& [crop, layer] : crops) {
    auto kept = process_crop(predictor, image, crop, grids[size_t(layer)], o, batches_done, batches_total, progress);
    std::move(kept.begin(), kept.end(), std::back_inserter(masks));
  }
  if (crops.size() > 1) {
    // Between crops, the mask of the smaller crop wins.
    std::vector<detect::Box> boxes;
    std::vector<float> scores;
    for (const auto& m : masks) {
      boxes.push_back(as_nms_box(m.box));
      scores.push_back(1.0f / float((m.crop_box[2] - m.crop_box[0]) * (m.crop_box[3] - m.crop_box[1])));
    }
    masks = select(masks, detect::nms(boxes, scores, float(o.crop_nms_thresh)));
  }
  if (o.min_mask_region_area > 0)
    masks = postprocess_small_regions(std::move(masks), o.min_mask_region_area, std::max(o.box_nms_thresh, o.crop_nms_thresh));
  for (auto& m : masks) m.area = coco::area(m.segmentation);
  return masks;
}

}  // namespace ptq4sam::eval
