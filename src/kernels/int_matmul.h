#pragma once
// The u8 x s8 -> s32 pieces the integer kernels share (quantized_linear, quantized_attention):
// matmul primitives on oneDNN's engine (kernels/onednn.h) cached by shape and weights layout, and the u8 codes of an
// activation row. Only the kernels' CPU files include it (it pulls in oneDNN).
#include <dnnl.hpp>

#include <cstdint>

#include "kernels/quantized_linear.h"

namespace ptq4sam::kernels {

// Reordered once when the weight is made: the matmul then reads the codes as they lie instead
// of repacking them on every call.
struct PackedWeightCodes {
  dnnl::memory::desc desc;
  at::Tensor bytes;      // desc.get_size() codes, or half as many bytes when nibbles
  bool nibbles = false;  // two signed 4-bit codes per byte, in groups of 128 (pack_nibbles)
};

}  // namespace ptq4sam::kernels

namespace ptq4sam::kernels::int_matmul {

// The weights layout oneDNN prefers for products with `typical_rows` rows of (K x N) s8.
dnnl::memory::desc preferred_weights(int64_t typical_rows, int64_t k, int64_t n);

// dst (m x N s32, row-major) = src (m x K u8 codes, row-major) times the s8 codes of `weights`
// (K x N, any layout oneDNN accepts). Primitives are cached by shape and layout (the same ones
// recur in every block), and several threads may run the same one at once.
void run(int64_t m, const uint8_t* src, const dnnl::memory::desc& weights, const void* weight_codes, int32_t* dst);

// out (m x N) = a (m x K) times b (K x N), float32 tensors of integer values of magnitude at most
// 255, summed exactly: float32 products over K-slices of kExactSlice are exact (each partial sum
// stays below 2^24), so any GEMM serves. `out` must hold the sum: int32 (K <= 2^15), float64, or
// float32 when K <= kExactSlice.
constexpr int64_t kExactSlice = 256;  // 256 * 255 * 255 < 2^24
void exact_code_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out);

// run's numbers on every CPU: run itself where VNNI makes oneDNN's product exact
// (integer_matmul_exact), else exact_code_product on the codes as float32. The weights are
// (K x N) s8 with element (i, j) at w[i * row_stride + j * col_stride].
void run_exact(int64_t m, const uint8_t* src, int64_t k, const uint8_t* w, int64_t n, int64_t row_stride,
               int64_t col_stride, int32_t* dst);

// Activation codes moved into u8: signed grids (quant_min < 0) are shifted up by 128, their
// zero point with them. The weights side takes `u8 code - 128` as its s8 code.
inline int32_t u8_shift(const ActivationQuantization& q) { return q.quant_min < 0 ? 128 : 0; }

// sum_k (a - za)(w - zw) = acc - zw sum(a) + column_term, with acc = sum_k a w: the term of one
// weight column, whose codes sum to `w_sum`. Every term fits int32 for K up to 2^15 (|codes| <=
// 255 and 128).
inline int32_t column_term(int32_t za, int32_t zw, int64_t k, int32_t w_sum) {
  return int32_t(k) * za * zw - za * w_sum;
}

// The codes of one row of k floats, shifted by `shift` and stored as bytes, and their sum; the
// codes equal the fake quantizer's, bit for bit (kernels/quantize_step.h). A shift of
// u8_shift - 128 gives the s8 codes of the weights side.
int32_t quantize_row(const float* in, uint8_t* out, int64_t k, const ActivationQuantization& q, int32_t shift);

}  // namespace ptq4sam::kernels::int_matmul
