#pragma once
// ResizeLongestSide (segment_anything/utils/transforms.py): the image resize SAM is trained
// with, and the matching transform of point and box coordinates.
#include <ATen/ATen.h>

#include <utility>

namespace ptq4sam::sam {

// (new_h, new_w) with the longest side equal to `long_side`, rounded as the official code.
std::pair<int64_t, int64_t> get_preprocess_shape(int64_t old_h, int64_t old_w, int64_t long_side);

// Bilinear resize of an H x W x C uint8 image with Pillow's algorithm (Image.resize with
// BILINEAR): a separable triangle filter whose support widens with the downscale factor
// (antialiasing when shrinking), fixed-point coefficients with 22 fractional bits, horizontal
// pass first. Matches torchvision's PIL path, which the official transform uses.
at::Tensor pil_resize_bilinear(const at::Tensor& image, int64_t new_h, int64_t new_w);

class ResizeLongestSide {
 public:
  explicit ResizeLongestSide(int64_t target_length) : target_length_(target_length) {}
  // H x W x 3 uint8 -> h x w x 3 uint8 with max(h, w) = target_length.
  at::Tensor apply_image(const at::Tensor& image) const;
  // (..., 2) x,y coordinates in the original image -> in the resized one (float64 math as numpy).
  at::Tensor apply_coords(const at::Tensor& coords, std::pair<int64_t, int64_t> original_size) const;
  // (..., 4) boxes x0,y0,x1,y1.
  at::Tensor apply_boxes(const at::Tensor& boxes, std::pair<int64_t, int64_t> original_size) const;

 private:
  int64_t target_length_;
};

}  // namespace ptq4sam::sam
