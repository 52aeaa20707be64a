#include <gtest/gtest.h>

#include "io/npy.h"
#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

TEST(Npy, RoundTrip) {
  test::TempDir dir;
  const at::Tensor t = at::randn({3, 5, 7});
  io::write_npy(dir.file("a.npy"), t);
  const at::Tensor back = io::read_npy(dir.file("a.npy"));
  EXPECT_TRUE(at::equal(back, t));
  // The header is 64-byte aligned and ends in a newline, as NumPy writes it.
  const std::string bytes = test::read_bytes(dir.file("a.npy"));
  const size_t header_end = 10 + (uint8_t(bytes[8]) | (uint8_t(bytes[9]) << 8));
  EXPECT_EQ(header_end % 64, 0u);
  EXPECT_EQ(bytes[header_end - 1], '\n');
  EXPECT_EQ(bytes.size(), header_end + t.numel() * 4);
}

TEST(Npy, MalformedFilesAreNamedErrors) {
  test::TempDir dir;
  io::write_npy(dir.file("good.npy"), at::randn({4, 4}));
  const std::string good = test::read_bytes(dir.file("good.npy"));
  struct Case {
    std::string name, bytes, message;
  };
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  std::string big_endian = good;
  big_endian.replace(big_endian.find("<f4"), 3, ">f4");
  // A header claiming `shape`, followed by 16 bytes of data.
  const auto claiming = [](const std::string& shape) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    while ((10 + dict.size() + 1) % 64) dict += ' ';
    dict += '\n';
    std::string bytes("\x93NUMPY\x01\x00", 8);
    bytes += char(dict.size() & 0xff);
    bytes += char(dict.size() >> 8);
    return bytes + dict + std::string(16, '\0');
  };
  const std::vector<Case> cases = {
      {"text.npy", "hello", "not a .npy file"},
      {"huge.npy", claiming("(4000000000, 4000000000)"), "truncated .npy data (shape (4000000000, 4000000000)"},
      {"bigger.npy", claiming("(5,)"), "truncated .npy data (shape (5,) needs 20 bytes, the file holds 16)"},
      {"digits.npy", claiming("(123456789012345678901234567890,)"), "malformed .npy header (dimension 123456789012345678901234567890 is too large)"},
      {"short.npy", good.substr(0, good.size() - 10), "truncated .npy data"},
      {"header.npy", good.substr(0, 20), "truncated .npy header"},
      {"fortran.npy", fortran, "Fortran-order"},
      {"endian.npy", big_endian, "unsupported .npy dtype '>f4'"},
  };
  for (const auto& c : cases) {
    test::write_bytes(dir.file(c.name), c.bytes);
    try {
      io::read_npy(dir.file(c.name));
      ADD_FAILURE() << c.name << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(dir.file(c.name) + ": " + c.message), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ptq4sam
