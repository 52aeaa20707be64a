// The integer runtime's code paths through SAM's modules: the bodies of the forward_on_codes
// methods declared beside each module's official forward (sam/common.h, sam/image_encoder.h),
// kept apart so that those files read like segment_anything/modeling. Each runs only when
// runs_on_codes() (sam/quant_point.h) says so and gives the simulated model's numbers bit for
// bit (tests/integer_runtime_test.cc).
#include <ATen/Parallel.h>

#include "sam/common.h"
#include "sam/image_encoder.h"

namespace ptq4sam::sam {

namespace {

// The (B * OH * OW, C * k * k) patches of a (B, H, W, C) grid of codes, im2col's column order
// (c, i, j) as grid.unfold(1, k, stride).unfold(2, k, stride).reshape(...) gives them, and each
// patch's sum. By hand: each pixel's C contiguous codes scattered with stride k * k, where the
// generic 6-d byte copy walks them one by one, and at::sum with an int32 result would first
// copy every byte into int32.
kernels::ActivationCodes unfold_codes(const at::Tensor& grid, int64_t k, int64_t stride, int64_t out_h,
                                      int64_t out_w) {
  const int64_t batch = grid.size(0), h = grid.size(1), w = grid.size(2), c = grid.size(3), width = c * k * k;
  kernels::ActivationCodes patches;
  patches.codes = at::empty({batch * out_h * out_w, width}, at::kByte);
  patches.row_sums.resize(size_t(batch * out_h * out_w));
  const uint8_t* src = grid.data_ptr<uint8_t>();
  uint8_t* dst = patches.codes.data_ptr<uint8_t>();
  at::parallel_for(0, batch * out_h * out_w, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (out_h * out_w), oy = r / out_w % out_h, ox = r % out_w;
      uint8_t* row = dst + r * width;
      int32_t sum = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const uint8_t* pixel = src + ((b * h + oy * stride + i) * w + ox * stride + j) * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            row[ch * k * k + i * k + j] = pixel[ch];
            sum += pixel[ch];
          }
        }
      patches.row_sums[size_t(r)] = sum;
    }
  });
  return patches;
}

}  // namespace

at::Tensor Conv2d::forward_on_codes(const at::Tensor& channels_last) const {
  // The input's codes, padded with the code of 0 (what conv2d's zero padding quantizes to), are
  // unfolded as bytes: a quarter of the float32 patches' memory, quantized once per pixel
  // instead of once per patch that holds it.
  const kernels::IntegerLinear& layer = *quant.integer;
  const int64_t batch = channels_last.size(0), h = channels_last.size(1), w = channels_last.size(2),
                c = channels_last.size(3), k = weight.size(-1);
  const kernels::ActivationCodes pixels = kernels::quantize_activations(channels_last, layer.input);
  at::Tensor grid = pixels.codes.view({batch, h, w, c});
  if (padding > 0) {
    const int64_t zero = kernels::quantize_activations(at::zeros({1, 1}), layer.input).codes.item<int64_t>();
    grid = at::constant_pad_nd(grid, {0, 0, padding, padding, padding, padding}, double(zero));
  }
  const int64_t out_h = (grid.size(1) - k) / stride + 1, out_w = (grid.size(2) - k) / stride + 1;
  kernels::ActivationCodes patches = unfold_codes(grid.contiguous(), k, stride, out_h, out_w);
  patches.quant = layer.input;
  patches.shift = pixels.shift;
  const at::Tensor y = kernels::quantized_linear(patches, layer.weight);
  return y.view({batch, out_h, out_w, -1}).permute({0, 3, 1, 2}).contiguous();
}

bool MLPBlock::on_codes() const {
  return runs_on_codes(lin1->quant) && runs_on_codes(lin2->quant) && !tap;
}

at::Tensor MLPBlock::forward_on_codes(const at::Tensor& x, const at::Tensor& residual, at::Tensor out) const {
  const kernels::IntegerLinear &first = *lin1->quant.integer, &second = *lin2->quant.integer;
  const kernels::ActivationCodes hidden =
      kernels::quantized_linear_codes(kernels::quantize_activations(x, first.input), first.weight, activation, second.input);
  return kernels::quantized_linear(hidden, second.weight, Activation::kNone, residual, out);
}

bool EncoderAttention::on_codes() const { return runs_on_codes(quant) && !tap; }

at::Tensor EncoderAttention::forward_on_codes(const at::Tensor& x, int64_t window_size,
                                              const at::Tensor& residual) const {
  const int64_t b = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  // An integer qkv projection hands the attention its codes; else the kernel quantizes the
  // float32 projection itself (the same codes).
  const auto project = [&](const at::Tensor& tokens) {
    if (!qkv->quant.integer) return qkv->forward(tokens);
    const kernels::IntegerLinear& layer = *qkv->quant.integer;
    return kernels::quantized_linear_block_codes(kernels::quantize_activations(tokens, layer.input), layer.weight,
                                                 Activation::kNone, kernels::qkv_code_blocks(*quant.integer));
  };
  const at::Tensor fused = project(x.reshape({b * h * w, c}));
  at::Tensor out;
  if (window_size > 0) {
    // window_partition pads the normalised tokens with zeros: their q, k and v, once.
    const bool padded = h % window_size != 0 || w % window_size != 0;
    const at::Tensor padding = padded ? project(at::zeros({1, c}, x.options())) : at::Tensor();
    const auto [rh, rw] = rel_pos_tables(window_size, window_size);
    out = kernels::quantized_window_attention(fused, padding, b, h, w, window_size, num_heads, *quant.integer, rh, rw);
  } else {
    const at::Tensor tokens = fused.view({b, h * w, 3, c});
    const auto [rh, rw] = rel_pos_tables(h, w);
    out = kernels::quantized_attention(tokens.select(2, 0), tokens.select(2, 1), tokens.select(2, 2), num_heads,
                                       *quant.integer, rh, rw)
              .view({b * h * w, c});
  }
  if (!proj->quant.integer) {
    const at::Tensor projected = proj->forward(out).view({b, h, w, c});
    return residual.defined() ? residual + projected : projected;
  }
  const kernels::IntegerLinear& layer = *proj->quant.integer;
  return kernels::quantized_linear(kernels::quantize_activations(out, layer.input), layer.weight,
                                   Activation::kNone, residual)
      .view({b, h, w, c});
}

}  // namespace ptq4sam::sam
