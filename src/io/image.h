#pragma once
// Image files through OpenCV, in the RGB order SAM expects.
#include <ATen/ATen.h>

#include <string>

namespace ptq4sam::io {

// The most pixels an image may have: 2^26 (8192 x 8192), 192 MB decoded. A PNG or JPEG header
// claiming more is refused before decoding, other formats by OpenCV's own limit, set to this.
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;

// Decodes an image file into an RGB uint8 tensor of shape H x W x 3. Throws ptq4sam::Error
// naming the file when it is missing, too large or does not decode.
at::Tensor read_image_rgb(const std::string& path);

// The same decoding in OpenCV's BGR order (cv2.imread / mmcv.imfrombytes, as mmdetection's
// pipelines read images).
at::Tensor read_image_bgr(const std::string& path);

// H x W x 3 BGR <-> RGB (a new contiguous tensor).
at::Tensor swap_red_blue(const at::Tensor& image);

// Encodes an H x W x 3 RGB or H x W gray uint8 tensor as PNG and writes it atomically.
void write_png(const std::string& path, const at::Tensor& image);

}  // namespace ptq4sam::io
