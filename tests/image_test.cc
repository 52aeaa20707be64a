// Image decoding (io/image.h): sizes are bounded before any pixel is decoded.
#include <gtest/gtest.h>

#include "io/image.h"
#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

std::string error_reading(const std::string& path) {
  return test::error_of([&] { io::read_image_rgb(path); });
}

TEST(Image, PngClaimingTooManyPixelsIsRefusedBeforeDecoding) {
  test::TempDir dir;
  io::write_png(dir.file("small.png"), at::zeros({3, 2, 3}, at::kByte));
  std::string bytes = test::read_bytes(dir.file("small.png"));
  EXPECT_EQ(io::read_image_rgb(dir.file("small.png")).sizes(), (std::vector<int64_t>{3, 2, 3}));
  // IHDR's width and height (big-endian at bytes 16 and 20): 100000 x 100000.
  const std::string side("\x00\x01\x86\xa0", 4);
  bytes.replace(16, 4, side);
  bytes.replace(20, 4, side);
  test::write_bytes(dir.file("huge.png"), bytes);
  EXPECT_EQ(error_reading(dir.file("huge.png")),
            dir.file("huge.png") + ": image header declares 10000000000 pixels, more than 67108864");
}

TEST(Image, JpegFrameClaimingTooManyPixelsIsRefused) {
  test::TempDir dir;
  // SOI, an APP0 segment, then a baseline frame header of 60000 x 60000, 3 components.
  const std::string jpeg = std::string("\xff\xd8", 2) + std::string("\xff\xe0\x00\x04\x00\x00", 6) +
                           std::string("\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03", 10) + std::string(40, '\0');
  test::write_bytes(dir.file("huge.jpg"), jpeg);
  EXPECT_EQ(error_reading(dir.file("huge.jpg")),
            dir.file("huge.jpg") + ": image header declares 3600000000 pixels, more than 67108864");
}

TEST(Image, CorruptFilesAreOneLineErrors) {
  test::TempDir dir;
  test::write_bytes(dir.file("text.jpg"), "not an image");
  EXPECT_EQ(error_reading(dir.file("text.jpg")), dir.file("text.jpg") + ": cannot decode image (not a PNG or JPEG file)");
  // Another format (here a BMP's signature) is refused before any decoder sees it.
  test::write_bytes(dir.file("small.bmp"), "BM" + std::string(60, '\0'));
  EXPECT_EQ(error_reading(dir.file("small.bmp")), dir.file("small.bmp") + ": cannot decode image (not a PNG or JPEG file)");
  // A PNG signature over garbage reaches the decoder, which fails.
  test::write_bytes(dir.file("cut.png"), std::string("\x89PNG\r\n\x1a\n", 8) + std::string(40, '\0'));
  EXPECT_EQ(error_reading(dir.file("cut.png")), dir.file("cut.png") + ": cannot decode image (corrupt or unsupported format)");
  test::write_bytes(dir.file("empty.png"), "");
  EXPECT_EQ(error_reading(dir.file("empty.png")), dir.file("empty.png") + ": image file is empty");
}

}  // namespace
}  // namespace ptq4sam
