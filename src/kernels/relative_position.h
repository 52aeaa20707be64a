#pragma once
// SAM's decomposed relative positions inside the integer attention: the tables laid out for the
// kernel and their product with a head's dequantized queries, the terms the official einsums
// give (kernels/quantized_attention.h).
#include <ATen/ATen.h>

#include <cstdint>

namespace ptq4sam::kernels {

// SAM's decomposed relative positions as the kernel reads them: per query grid row (h) or
// column (w), its (k_h x d) or (k_w x d) table transposed to d x pad, its key columns padded
// with zeros to whole vectors of 16.
struct RelativeTables {
  at::Tensor h, w;  // (q_h, d, pad_h) and (q_w, d, pad_w), contiguous
  int64_t q_h = 0, q_w = 0, k_h = 0, k_w = 0, pad_h = 0, pad_w = 0;
  bool defined() const { return h.defined(); }
};

// The tables of heads of d channels; throws Error unless both or neither are given, each
// (q, k, d). Which grid they must cover is the caller's check.
RelativeTables relative_tables(const at::Tensor& rel_pos_h, const at::Tensor& rel_pos_w, int64_t d);

// A head's relative-position terms from its dequantized queries (n = q_h x q_w, query r at grid
// row r / q_w, column r % q_w: the first q_h and q_w of the tables' rows): rel_h (n x pad_h)
// grid row by grid row, rel_w (n x pad_w) column by column, each table read once. Every term is
// summed in channel order, one fused multiply-add each, on every CPU.
void relative_terms(const float* q_values, int64_t d, const RelativeTables& t, int64_t q_h, int64_t q_w,
                    float* rel_h, float* rel_w);

}  // namespace ptq4sam::kernels
