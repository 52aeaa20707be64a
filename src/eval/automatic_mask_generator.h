#pragma once
// SamAutomaticMaskGenerator (segment_anything/automatic_mask_generator.py and utils/amg.py):
// SAM prompted with a grid of points over the image and over crops of it, keeping the masks
// that pass the predicted-IoU and stability filters and survive box NMS.
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "coco/rle.h"
#include "sam/predictor.h"

namespace ptq4sam::eval {

// The official generator's keyword arguments and defaults (points_per_side; explicit
// point_grids are not offered).
struct AmgOptions {
  int64_t points_per_side = 32;
  int64_t points_per_batch = 64;
  double pred_iou_thresh = 0.88;
  double stability_score_thresh = 0.95;
  double stability_score_offset = 1.0;
  double box_nms_thresh = 0.7;
  int64_t crop_n_layers = 0;
  double crop_nms_thresh = 0.7;
  double crop_overlap_ratio = 512.0 / 1500.0;
  int64_t crop_n_points_downscale_factor = 1;
  int64_t min_mask_region_area = 0;
};

// Throws ptq4sam::Error naming the option ("--points-per-side: ...") for a value that would
// give no points or make no sense (thresholds are open where the official ones are: any
// pred_iou_thresh, stability_score_thresh in [0, 1], NMS thresholds in [0, 1]).
void check_options(const AmgOptions& options);

// XYXY in pixels; a mask's box spans its first to its last pixel (batched_mask_to_box), a
// crop's is [x0, y0, x1, y1) as generate_crop_boxes gives it.
using AmgBox = std::array<int64_t, 4>;

struct AmgMask {
  coco::Rle segmentation;  // at the image's size
  uint64_t area = 0;
  AmgBox box{};
  float predicted_iou = 0;
  double point_x = 0, point_y = 0;  // the prompt, in image pixels
  float stability_score = 0;
  AmgBox crop_box{};
};

// Called after each batch of points: batches done and in all.
using AmgProgress = std::function<void(size_t done, size_t total)>;

// The masks of an H x W x 3 uint8 RGB image, in the official generator's order. Runs the image
// encoder once per crop on `predictor` (its image is replaced).
std::vector<AmgMask> generate_masks(sam::Predictor& predictor, const at::Tensor& image, const AmgOptions& options,
                                    const AmgProgress& progress = nullptr);

// build_point_grid: n x n points in [0, 1]^2, x varying fastest, as numpy's linspace gives them.
std::vector<std::array<double, 2>> point_grid(int64_t n_per_side);
// generate_crop_boxes: the whole image (layer 0), then (2^i)^2 overlapping crops per layer i.
std::vector<std::pair<AmgBox, int64_t>> crop_boxes(int64_t height, int64_t width, int64_t n_layers, double overlap_ratio);
// remove_small_regions: holes (`holes`) or islands smaller than `min_area` removed from an
// h x w row-major mask, with OpenCV's 8-connected components; returns whether it changed.
bool remove_small_regions(std::vector<uint8_t>& mask, int64_t h, int64_t w, double min_area, bool holes);

}  // namespace ptq4sam::eval
