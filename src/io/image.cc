#include "io/image.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ptq4sam::io {
namespace {

uint32_t big_endian(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

bool is_png(const std::vector<unsigned char>& b) { return b.size() >= 8 && std::equal(kPng, kPng + 8, b.begin()); }
bool is_jpeg(const std::vector<unsigned char>& b) { return b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff; }

// Width x height from a PNG's IHDR or a JPEG's frame header, where the bytes are one; else 0.
// Unsigned: two 32-bit sides multiply past int64.
uint64_t declared_pixels(const std::vector<unsigned char>& b) {
  if (b.size() >= 24 && is_png(b))
    return uint64_t(big_endian(&b[16], 4)) * uint64_t(big_endian(&b[20], 4));
  if (b.size() < 4 || b[0] != 0xff || b[1] != 0xd8) return 0;
  // Segments after SOI: 0xff, a marker, a 2-byte length (standalone markers have none).
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (b[i] != 0xff) return 0;
    const unsigned char marker = b[i + 1];
    if (marker == 0xff) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2;
      continue;
    }
    const size_t length = big_endian(&b[i + 2], 2);
    const bool frame = marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
    if (frame && i + 9 <= b.size()) return uint64_t(big_endian(&b[i + 5], 2)) * uint64_t(big_endian(&b[i + 7], 2));
    if (marker == 0xda || length < 2) return 0;  // entropy-coded data follows: no frame seen
    i += 2 + length;
  }
  return 0;
}

// OpenCV's own bound as well, should a header we read differ from what its decoder reads; set
// once, before its first decode.
void limit_opencv_pixels() {
  static const bool set = [] {
    return ::setenv("OPENCV_IO_MAX_IMAGE_PIXELS", std::to_string(kMaxImagePixels).c_str(), 0) == 0;
  }();
  (void)set;
}

}  // namespace

at::Tensor read_image_bgr(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open image file");
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw Error(path, "image file is empty");
  // Only PNG and JPEG reach a decoder: OpenCV would try a dozen others by their signatures, some
  // of which spend seconds on a few hundred hostile bytes (fuzz/crashes/image/slow-unit-be6f52...).
  if (!is_png(bytes) && !is_jpeg(bytes)) throw Error(path, "cannot decode image (not a PNG or JPEG file)");
  if (declared_pixels(bytes) > uint64_t(kMaxImagePixels))
    throw Error(path, "image header declares " + std::to_string(declared_pixels(bytes)) + " pixels, more than " +
                          std::to_string(kMaxImagePixels));
  limit_opencv_pixels();
  // IMREAD_COLOR also applies EXIF orientation, as cv2.imread in the official SAM scripts.
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(bytes, cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    bgr.release();
  }
  if (bgr.empty()) throw Error(path, "cannot decode image (corrupt or unsupported format)");
  at::Tensor out = at::empty({bgr.rows, bgr.cols, 3}, at::kByte);
  for (int y = 0; y < bgr.rows; ++y)
    std::memcpy(out.data_ptr<uint8_t>() + int64_t(y) * bgr.cols * 3, bgr.ptr<uint8_t>(y), size_t(bgr.cols) * 3);
  return out;
}

at::Tensor swap_red_blue(const at::Tensor& image) { return image.flip({2}).contiguous(); }

at::Tensor read_image_rgb(const std::string& path) { return swap_red_blue(read_image_bgr(path)); }

void write_png(const std::string& path, const at::Tensor& image) {
  const at::Tensor img = image.contiguous();
  if (img.scalar_type() != at::kByte || !(img.dim() == 2 || (img.dim() == 3 && img.size(2) == 3)))
    throw Error(path, "write_png needs an H x W or H x W x 3 uint8 image");
  const int rows = int(img.size(0)), cols = int(img.size(1));
  cv::Mat mat;
  if (img.dim() == 2) {
    mat = cv::Mat(rows, cols, CV_8UC1, const_cast<uint8_t*>(img.data_ptr<uint8_t>())).clone();
  } else {
    const cv::Mat rgb(rows, cols, CV_8UC3, const_cast<uint8_t*>(img.data_ptr<uint8_t>()));
    cv::cvtColor(rgb, mat, cv::COLOR_RGB2BGR);
  }
  std::vector<unsigned char> png;
  if (!cv::imencode(".png", mat, png)) throw Error(path, "PNG encoding failed");
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
}

}  // namespace ptq4sam::io
