#include "io/image.h"

#include <fstream>
#include <iterator>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ptq4sam::io {

at::Tensor read_image_bgr(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open image file");
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw Error(path, "image file is empty");
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
