#pragma once
// The image encoder's attention on integer codes, for the integer runtime. q, k and v are
// quantized per tensor by their own quantizers; Q K^T is a u8 x s8 -> s32 product, rescaled,
// biased with the relative positions and softmaxed in float32. An affine softmax quantizer
// then gives u8 codes and P V is a second integer product; AGQ's log grid (levels
// s * 2^(-q / tau), not an integer grid) is applied as a float transform instead, and P V runs
// in float32 on the dequantized values. Query rows go in chunks, one head per thread, so a
// global block never holds more than a few MB of scores.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <vector>

#include "kernels/quantized_linear.h"

namespace ptq4sam::kernels {

// AGQ's log grid for the probabilities: code c in [0, levels) stands for scale * 2^(-c / tau),
// code `levels` for 0.
struct LogProbabilities {
  double scale = 1.0, tau = 1.0;
  int32_t levels = 0;
  // The quantizer's codes of n probabilities (in [0, levels]), and its value of each code.
  std::function<void(const float* in, int32_t* codes, int64_t n)> codes;
  std::vector<float> values;
};

struct IntegerAttention {
  ActivationQuantization q, k, v;
  // The softmax output's quantizer: affine (`probs`) unless `log_probs` is set. With a power-of-
  // two tau up to 4, P V on log codes is still exact integer work: per residue class c mod tau
  // the levels are powers of two, whose integers, split into bytes, make a few u8 planes (two
  // for 4 bits at tau 1 or 2). Other grids run P V in float32 on the quantizer's values.
  ActivationQuantization probs;
  std::shared_ptr<const LogProbabilities> log_probs;
};

// How the fused q | k | v projection (3C columns) becomes the codes the kernels below take in
// place of float32 values (quantized_linear_block_codes): q's codes moved into u8, k's and v's
// as the s8 codes of the products' weights side. The same codes the kernels would compute from
// the projection's float32 output, so either input gives the same numbers.
std::vector<CodeBlock> qkv_code_blocks(const IntegerAttention& quant);

// multi_head_attention(Q(q), Q(k), Q(v), num_heads, ScoreScaling::kScaleQueries, rel_h, rel_w)
// with the probabilities quantized, for (B, N, C) queries and (B, M, C) keys and values of any
// strides (unit stride along C), float32, or all three uint8 codes (qkv_code_blocks' bytes of
// one fused projection): the float attention's numbers up to float32 rounding (exact
// integer sums, the exponential to within 2 ulp), so a probability's code at a rounding
// boundary may differ by one. The same numbers on every CPU with AVX-512: without VNNI the
// integer products run as exact float32 ones.
//
// SAM's relative positions come as get_rel_pos's tables, rel_pos_h (q_h, k_h, C / num_heads) and
// rel_pos_w (q_w, k_w, C / num_heads), with N = q_h q_w and M = k_h k_w; or undefined, for none.
// Their terms rel_h = Q(q) . rel_pos_h and rel_w = Q(q) . rel_pos_w (the official einsums) are
// computed here, per head, summed in order over the channels: never materialised for all heads.
// Throws Error when the tables do not cover the queries and keys.
at::Tensor quantized_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t num_heads,
                               const IntegerAttention& quant, const at::Tensor& rel_pos_h = at::Tensor(),
                               const at::Tensor& rel_pos_w = at::Tensor());

// SAM's windowed attention (window_partition, the attention per window, window_unpartition)
// without the partition's copies, for the integer runtime. `qkv` (B*H*W, 3C) holds the fused
// q | k | v projection of each token of a B x H x W grid, row-major; `padding` (3C) that of a
// zero token, which window_partition's zero padding puts at every position of a window past
// the grid (needed only when ws does not divide H or W); both float32, or both uint8 codes
// (qkv_code_blocks). Keys and values are each window's
// ws x ws positions in window_partition's order; only tokens inside the grid are queries, as
// only theirs survive window_unpartition. rel_pos_h and rel_pos_w are get_rel_pos's (ws, ws,
// C / num_heads) tables, or undefined. Returns (B*H*W, C): each token's output, as
// quantized_attention on the partitioned windows gives it, bit for bit. Throws Error when the
// shapes do not fit.
at::Tensor quantized_window_attention(const at::Tensor& qkv, const at::Tensor& padding, int64_t batch, int64_t height,
                                      int64_t width, int64_t window, int64_t num_heads, const IntegerAttention& quant,
                                      const at::Tensor& rel_pos_h = at::Tensor(),
                                      const at::Tensor& rel_pos_w = at::Tensor());

}  // namespace ptq4sam::kernels
