#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ptq4sam::io {
namespace {

using nlohmann::json;

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {{at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kDouble, "F64"}, {at::kLong, "I64"}, {at::kInt, "I32"},
                                 {at::kShort, "I16"}, {at::kChar, "I8"},    {at::kByte, "U8"},  {at::kBool, "BOOL"}};

const char* dtype_name(at::ScalarType type, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (d.type == type) return d.name;
  throw Error(tensor, std::string("cannot be written to safetensors (dtype ") + c10::toString(type) + ")");
}

at::ScalarType dtype_of(const std::string& name, const std::string& where) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  throw Error(where, "unsupported dtype '" + name + "'");
}

constexpr uint64_t kMaxHeader = 100u << 20;

}  // namespace

const at::Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor t = tensor.contiguous().cpu();
    const uint64_t bytes = uint64_t(t.numel()) * uint64_t(t.element_size());
    header[name] = {{"dtype", dtype_name(t.scalar_type(), name)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomic(path, [&](std::ostream& out) {
    const uint64_t n = text.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.numel() * t.element_size()));
  });
}

bool looks_like_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char len[9] = {};
  if (!in.read(reinterpret_cast<char*>(len), 9)) return false;
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  return n > 1 && n < kMaxHeader && len[8] == '{';
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path, "cannot open");
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  unsigned char len[8];
  if (size < 8 || !in.read(reinterpret_cast<char*>(len), 8)) throw Error(path, "truncated safetensors file (no header)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  if (n > kMaxHeader || 8 + n > size) throw Error(path, "truncated or corrupt safetensors header");
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path, std::string("corrupt safetensors header: ") + e.what());
  }
  if (!header.is_object()) throw Error(path, "corrupt safetensors header (not an object)");
  const uint64_t data_size = size - 8 - n;
  SafetensorsFile file;
  std::vector<std::pair<uint64_t, std::pair<std::string, json>>> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      try {
        file.metadata = entry.get<std::map<std::string, std::string>>();
      } catch (const json::exception&) {
        throw Error(path, "__metadata__ must map strings to strings");
      }
      continue;
    }
    try {
      entries.push_back({entry.at("data_offsets").at(0).get<uint64_t>(), {name, entry}});
    } catch (const json::exception&) {
      throw Error(path, "tensor '" + name + "' has no valid data_offsets");
    }
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [begin, named] : entries) {
    const auto& [name, entry] = named;
    const std::string where = path + ": tensor '" + name + "'";
    at::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t end = 0;
    try {
      type = dtype_of(entry.at("dtype").get<std::string>(), where);
      shape = entry.at("shape").get<std::vector<int64_t>>();
      end = entry.at("data_offsets").at(1).get<uint64_t>();
    } catch (const json::exception&) {
      throw Error(where, "has a malformed header entry");
    }
    int64_t numel = 1;
    for (const int64_t d : shape) {
      if (d < 0) throw Error(where, "has a negative dimension");
      numel *= d;
    }
    const uint64_t bytes = uint64_t(numel) * uint64_t(c10::elementSize(type));
    if (end < begin || end - begin != bytes) throw Error(where, "byte range does not match its dtype and shape");
    if (end > data_size) throw Error(where, "lies beyond the end of the file (truncated?)");
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
    in.seekg(std::streamoff(8 + n + begin));
    if (bytes > 0 && !in.read(static_cast<char*>(t.data_ptr()), std::streamsize(bytes)))
      throw Error(where, "could not be read (truncated?)");
    file.tensors.emplace_back(name, t);
  }
  return file;
}

}  // namespace ptq4sam::io
