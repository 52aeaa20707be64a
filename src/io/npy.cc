#include "io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ptq4sam::io {
namespace {

struct NpyType {
  const char* descr;
  at::ScalarType type;
};

constexpr NpyType kTypes[] = {
    {"<f4", at::kFloat}, {"<f8", at::kDouble}, {"<i4", at::kInt}, {"<i8", at::kLong},
    {"|u1", at::kByte},  {"|b1", at::kBool},   {"|i1", at::kChar}, {"<f2", at::kHalf},
};

std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw Error(path, "malformed .npy header (no '" + key + "')");
  size_t v = header.find(':', k);
  if (v == std::string::npos) throw Error(path, "malformed .npy header");
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  size_t end = v;
  if (header[v] == '(') {
    end = header.find(')', v);
    if (end == std::string::npos) throw Error(path, "malformed .npy header (shape)");
    return header.substr(v, end - v + 1);
  }
  if (header[v] == '\'') {
    end = header.find('\'', v + 1);
    if (end == std::string::npos) throw Error(path, "malformed .npy header");
    return header.substr(v + 1, end - v - 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return header.substr(v, end - v);
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open file");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path, "not a .npy file");
  uint32_t header_len = 0;
  const int major = magic[6];
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) throw Error(path, "truncated .npy header");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) throw Error(path, "truncated .npy header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  } else {
    throw Error(path, "unsupported .npy version " + std::to_string(major));
  }
  if (header_len > (1u << 20)) throw Error(path, "malformed .npy header (too long)");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) throw Error(path, "truncated .npy header");

  const std::string descr = dict_value(header, "descr", path);
  const std::string fortran = dict_value(header, "fortran_order", path);
  const std::string shape_text = dict_value(header, "shape", path);
  if (fortran.rfind("False", 0) != 0) throw Error(path, "Fortran-order .npy arrays are not supported");
  const NpyType* type = nullptr;
  for (const auto& t : kTypes)
    if (descr == t.descr) type = &t;
  if (!type) throw Error(path, "unsupported .npy dtype '" + descr + "'");

  // The data must be in the file before a tensor of that size is allocated.
  const std::streamoff data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const uint64_t available = uint64_t(in.tellg() - data_start);
  in.seekg(data_start);
  std::vector<int64_t> shape;
  uint64_t bytes = uint64_t(c10::elementSize(type->type));
  const std::regex number("[0-9]+");
  for (auto it = std::sregex_iterator(shape_text.begin(), shape_text.end(), number); it != std::sregex_iterator(); ++it) {
    const std::string digits = it->str();
    const int64_t dim = digits.size() > 18 ? -1 : std::stoll(digits);
    if (dim < 0) throw Error(path, "malformed .npy header (dimension " + digits + " is too large)");
    shape.push_back(dim);
    if (dim > 0 && bytes > (uint64_t(1) << 62) / uint64_t(dim))
      throw Error(path, "truncated .npy data (shape " + shape_text + " is larger than the file)");
    bytes *= uint64_t(dim);
  }
  if (bytes > available)
    throw Error(path, "truncated .npy data (shape " + shape_text + " needs " + std::to_string(bytes) + " bytes, the file holds " +
                          std::to_string(available) + ")");
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(type->type));
  if (!in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(bytes)))
    throw Error(path, "truncated .npy data (shape " + shape_text + " needs " + std::to_string(bytes) + " bytes)");
  return tensor;
}

void write_npy(const std::string& path, const at::Tensor& tensor) {
  const at::Tensor data = tensor.contiguous().cpu();
  const NpyType* type = nullptr;
  for (const auto& t : kTypes)
    if (data.scalar_type() == t.type) type = &t;
  if (!type) throw Error(path, "cannot write dtype " + std::string(c10::toString(data.scalar_type())) + " to .npy");
  std::ostringstream shape;
  shape << "(";
  for (int64_t d = 0; d < data.dim(); ++d) shape << data.size(d) << (data.dim() == 1 || d + 1 < data.dim() ? "," : "");
  shape << ")";
  std::string header = "{'descr': '" + std::string(type->descr) + "', 'fortran_order': False, 'shape': " + shape.str() + ", }";
  // Pad so that the data starts on a 64-byte boundary, the header ending in '\n'.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes.push_back(char(header.size() & 0xff));
  bytes.push_back(char(header.size() >> 8));
  bytes += header;
  bytes.append(static_cast<const char*>(data.data_ptr()), data.numel() * data.element_size());
  write_file_atomic(path, bytes);
}

}  // namespace ptq4sam::io
