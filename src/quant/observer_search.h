#pragma once
// Fused CPU kernels of the observers' searches. The seed evaluates each candidate of a search
// with a handful of whole-tensor ops; on a CPU that costs hours for ViT-B (25,600 candidates
// per weight at 8 bits, dozens of log quantizations of every 4096 x 4096 attention map). These
// kernels give the same losses (float32 element operations in the seed's order, sums in
// float64) in one pass, without temporaries. They take tensors on any device and compute on
// the host; tensors they return are on their inputs' device.
#include <ATen/ATen.h>

#include <utility>

#include "quant/fake_quant.h"

namespace ptq4sam::quant {

// The seed's two-dimensional MSE grid (MSEObserver on two-sided data): per row of `rows`
// (channels x elements, float32), 100 ranges of width (max - min) * i / 100 and, for each,
// every zero point of the grid; the first range of least mean |Q(x) - x|^2.4 wins. `row_min`
// and `row_max` are the rows' observed ranges. Returns the winning (min, max) per row.
// Candidates that cannot win are abandoned as soon as their partial loss exceeds the best.
std::pair<at::Tensor, at::Tensor> mse_grid_search_2d(const at::Tensor& rows, const at::Tensor& row_min,
                                                     const at::Tensor& row_max, const QuantRange& range);

// mean |Q(x) - x|^2.4 with Q the affine fake quantizer (per tensor), computed in x's type
// (float32 or float64, scale and zero point cast to it, as ATen does with 0-d operands).
double affine_loss(const at::Tensor& x, double scale, double zero_point, const QuantRange& range);

// AGQ's loss of one candidate: mean |Q(A) V - reference|^2.4 with Q the log quantizer of
// scale `scale` and `tau`, A (batch, n, n) and V (batch, n, d) float32, reference = A V.
// Rows of A are quantized and multiplied in blocks, so Q(A) is never held whole.
double agq_loss(const at::Tensor& attn, const at::Tensor& value, const at::Tensor& reference, double scale,
                const QuantRange& range, double tau);

}  // namespace ptq4sam::quant
