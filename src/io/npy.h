#pragma once
// NumPy .npy arrays (format versions 1-3), C order.
#include <ATen/ATen.h>

#include <string>

namespace ptq4sam::io {

// Reads a little-endian float32/float64/int/uint8/bool array in C order; float64 is kept.
// Throws ptq4sam::Error naming the file for a malformed header, Fortran order, a big-endian or
// unsupported dtype, or a data size that disagrees with the shape.
at::Tensor read_npy(const std::string& path);

// Writes a contiguous copy of `tensor` (float32, float64, int32, int64, uint8 or bool) atomically.
void write_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace ptq4sam::io
