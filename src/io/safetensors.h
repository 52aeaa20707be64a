#pragma once
// The safetensors format (readable from Python with `safetensors`): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the tensors' bytes back to back.
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ptq4sam::io {

struct SafetensorsFile {
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  const at::Tensor* find(const std::string& name) const;
};

// Writes atomically (temp file + rename). Tensors may be F32, F64, I64, I32, I16, I8, U8 or BOOL.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata);

// Reads and validates a whole file (header, dtypes, shapes against byte ranges, bounds);
// throws ptq4sam::Error naming the file otherwise.
SafetensorsFile read_safetensors(const std::string& path);

// Whether the file begins like a safetensors file (a plausible header length and '{').
bool looks_like_safetensors(const std::string& path);

}  // namespace ptq4sam::io
