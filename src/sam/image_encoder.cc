#include "sam/image_encoder.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "kernels/attention.h"

namespace ptq4sam::sam {

EncoderAttention::EncoderAttention(int64_t dim, int64_t num_heads_, bool use_rel_pos, int64_t input_size)
    : num_heads(num_heads_) {
  qkv = register_module("qkv", std::make_shared<Linear>(dim, dim * 3));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim));
  if (use_rel_pos) {
    const int64_t head_dim = dim / num_heads;
    rel_pos_h = register_parameter("rel_pos_h", torch::empty({2 * input_size - 1, head_dim}), false);
    rel_pos_w = register_parameter("rel_pos_w", torch::empty({2 * input_size - 1, head_dim}), false);
  }
}

at::Tensor get_rel_pos(int64_t q_size, int64_t k_size, const at::Tensor& rel_pos) {
  const int64_t max_rel_dist = 2 * std::max(q_size, k_size) - 1;
  at::Tensor table = rel_pos;
  if (rel_pos.size(0) != max_rel_dist) {
    table = at::upsample_linear1d(rel_pos.reshape({1, rel_pos.size(0), -1}).permute({0, 2, 1}), {max_rel_dist}, false)
                .reshape({-1, max_rel_dist})
                .permute({1, 0});
  }
  const double q_scale = std::max(double(k_size) / double(q_size), 1.0);
  const double k_scale = std::max(double(q_size) / double(k_size), 1.0);
  const at::Tensor q_coords = at::arange(q_size, at::kFloat).unsqueeze(1) * q_scale;
  const at::Tensor k_coords = at::arange(k_size, at::kFloat).unsqueeze(0) * k_scale;
  const at::Tensor relative = (q_coords - k_coords) + double(k_size - 1) * k_scale;
  return table.index({relative.to(at::kLong)});
}

std::pair<at::Tensor, at::Tensor> EncoderAttention::rel_pos_tables(int64_t h, int64_t w) const {
  if (!rel_pos_h.defined()) return {};
  return {get_rel_pos(h, h, rel_pos_h), get_rel_pos(w, w, rel_pos_w)};
}

at::Tensor EncoderAttention::forward(const at::Tensor& x) const {
  // The integer attention of each (window) batch element, apart from the residual, which a tap
  // records.
  if (runs_on_codes(quant)) return tapped(tap, {x}, forward_on_codes(x, 0, at::Tensor()));
  const int64_t b = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  const int64_t head_dim = c / num_heads;
  // (B, HW, 3, C): q, k and v are strided views of the fused projection, never copied.
  const at::Tensor fused = qkv->forward(x.reshape({b, h * w, c})).view({b, h * w, 3, c});
  const auto [rh, rw] = rel_pos_tables(h, w);
  const at::Tensor q = quantize_at(quant.q, fused.select(2, 0));
  const at::Tensor k = quantize_at(quant.k, fused.select(2, 1));
  const at::Tensor v = quantize_at(quant.v, fused.select(2, 2));
  at::Tensor rel_h, rel_w;
  if (rh.defined()) {
    // einsum("bhwc,hkc->bhwk") per head, on the unscaled q as in the official code.
    const at::Tensor r_q = q.view({b, h, w, num_heads, head_dim});
    rel_h = at::einsum("bhwnc,hkc->bnhwk", {r_q, rh}).reshape({b, num_heads, h * w, h});
    rel_w = at::einsum("bhwnc,wkc->bnhwk", {r_q, rw}).reshape({b, num_heads, h * w, w});
  }
  const at::Tensor out = kernels::multi_head_attention(q, k, v, num_heads, kernels::ScoreScaling::kScaleQueries,
                                                       rel_h, rel_w, softmax_hook(quant.softmax));
  return tapped(tap, {x}, proj->forward(out).view({b, h, w, c}));
}

at::Tensor window_partition(const at::Tensor& x, int64_t ws, std::pair<int64_t, int64_t>& padded_hw) {
  const int64_t b = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  const int64_t pad_h = (ws - h % ws) % ws, pad_w = (ws - w % ws) % ws;
  const at::Tensor padded = (pad_h > 0 || pad_w > 0) ? at::constant_pad_nd(x, {0, 0, 0, pad_w, 0, pad_h}) : x;
  const int64_t hp = h + pad_h, wp = w + pad_w;
  padded_hw = {hp, wp};
  return padded.view({b, hp / ws, ws, wp / ws, ws, c}).permute({0, 1, 3, 2, 4, 5}).contiguous().view({-1, ws, ws, c});
}

at::Tensor window_unpartition(const at::Tensor& windows, int64_t ws, std::pair<int64_t, int64_t> padded_hw,
                              std::pair<int64_t, int64_t> hw) {
  const auto [hp, wp] = padded_hw;
  const auto [h, w] = hw;
  const int64_t b = windows.size(0) / (hp * wp / ws / ws);
  at::Tensor x = windows.view({b, hp / ws, wp / ws, ws, ws, -1}).permute({0, 1, 3, 2, 4, 5}).contiguous().view({b, hp, wp, -1});
  if (hp > h || wp > w) x = x.narrow(1, 0, h).narrow(2, 0, w).contiguous();
  return x;
}

EncoderBlock::EncoderBlock(const ImageEncoderConfig& config, int64_t window_size_) : window_size(window_size_) {
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(config.embed_dim, 1e-6));
  const int64_t input_size = window_size == 0 ? config.grid_size() : window_size;
  attn = register_module("attn", std::make_shared<EncoderAttention>(config.embed_dim, config.num_heads,
                                                                    config.use_rel_pos, input_size));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(config.embed_dim, 1e-6));
  mlp = register_module("mlp", std::make_shared<MLPBlock>(config.embed_dim, config.mlp_dim, Activation::kGelu));
}

at::Tensor EncoderBlock::forward(const at::Tensor& x) const { return add_mlp(add_attention(x)); }

at::Tensor EncoderBlock::add_attention(const at::Tensor& x) const {
  if (attn->on_codes()) return attn->forward_on_codes(norm1->forward(x), window_size, x);
  if (window_size == 0) return x + attn->forward(norm1->forward(x));
  std::pair<int64_t, int64_t> padded_hw;
  const at::Tensor windows = attn->forward(window_partition(norm1->forward(x), window_size, padded_hw));
  return x + window_unpartition(windows, window_size, padded_hw, {x.size(1), x.size(2)});
}

at::Tensor EncoderBlock::add_mlp(const at::Tensor& z) const {
  // Observers and taps must see the whole MLP input at once.
  if (at::GradMode::is_enabled() || mlp->tap || mlp->lin1->quant.needs_whole_tensor() ||
      mlp->lin2->quant.needs_whole_tensor())
    return z + mlp->forward(norm2->forward(z));
  // Row chunks keep the MLP's hidden activations (4x the width) small and reusable, and its
  // normalised input in cache: the norm works row by row, so chunk by chunk gives its numbers.
  const int64_t c = z.size(-1);
  const at::Tensor z2 = z.view({-1, c});
  at::Tensor out = at::empty_like(z2);
  constexpr int64_t kRows = 1024;
  for (int64_t r = 0; r < z2.size(0); r += kRows) {
    const int64_t rows = std::min(kRows, z2.size(0) - r);
    const at::Tensor residual = z2.narrow(0, r, rows);
    const at::Tensor normed = norm2->forward(residual);
    at::Tensor dst = out.narrow(0, r, rows);
    if (mlp->on_codes())
      mlp->forward_on_codes(normed, residual, dst);
    else
      at::add_out(dst, residual, mlp->forward(normed));
  }
  return out.view(z.sizes());
}

PatchEmbed::PatchEmbed(int64_t patch_size, int64_t in_chans, int64_t embed_dim) {
  proj = register_module("proj", std::make_shared<Conv2d>(in_chans, embed_dim, patch_size, patch_size, 0, true));
}

namespace {

// The (B * gh * gw, C * p * p) rows of the image's non-overlapping p x p patches, as
// x.view({b, c, gh, p, gw, p}).permute({0, 2, 4, 1, 3, 5}).reshape(...) gives them: each image
// row's run of p pixels copied straight to its patch, where the generic 6-d permuted copy walks
// the image element by element.
at::Tensor patch_rows(const at::Tensor& image, int64_t p) {
  const int64_t b = image.size(0), c = image.size(1), h = image.size(2), w = image.size(3);
  const int64_t gh = h / p, gw = w / p, width = c * p * p;
  if (image.scalar_type() != at::kFloat || image.requires_grad() || h % p != 0 || w % p != 0)
    return image.view({b, c, gh, p, gw, p}).permute({0, 2, 4, 1, 3, 5}).reshape({b * gh * gw, width});
  const at::Tensor x = image.contiguous();
  at::Tensor rows = at::empty({b * gh * gw, width}, at::kFloat);
  const float* src = x.data_ptr<float>();
  float* dst = rows.data_ptr<float>();
  at::parallel_for(0, b * gh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bi = begin; bi < end; ++bi) {
      const int64_t n = bi / gh, i = bi % gh;
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t y = 0; y < p; ++y) {
          const float* line = src + ((n * c + ch) * h + i * p + y) * w;
          float* out = dst + bi * gw * width + (ch * p + y) * p;
          for (int64_t j = 0; j < gw; ++j) std::copy(line + j * p, line + (j + 1) * p, out + j * width);
        }
    }
  });
  return rows;
}

}  // namespace

at::Tensor PatchEmbed::forward(const at::Tensor& x) const {
  // A stride-p p x p convolution is a matmul over non-overlapping patches.
  const int64_t b = x.size(0), p = proj->stride;
  const int64_t gh = x.size(2) / p, gw = x.size(3) / p;
  const at::Tensor patches = patch_rows(x, p);
  const at::Tensor w = proj->weight.view({proj->weight.size(0), -1});
  return kernels::linear(patches, w, proj->bias).view({b, gh, gw, -1});
}

ImageEncoderViT::ImageEncoderViT(const ImageEncoderConfig& config_) : config(config_) {
  patch_embed = register_module("patch_embed", std::make_shared<PatchEmbed>(config.patch_size, config.in_chans, config.embed_dim));
  pos_embed = register_parameter("pos_embed", torch::empty({1, config.grid_size(), config.grid_size(), config.embed_dim}), false);
  torch::nn::ModuleList block_list;
  for (int64_t i = 0; i < config.depth; ++i) {
    const bool global = std::find(config.global_attn_indexes.begin(), config.global_attn_indexes.end(), i) !=
                        config.global_attn_indexes.end();
    blocks.push_back(append(block_list, std::make_shared<EncoderBlock>(config, global ? 0 : config.window_size)));
  }
  register_module("blocks", block_list);
  torch::nn::ModuleList neck;
  neck_conv1 = append(neck, std::make_shared<Conv2d>(config.embed_dim, config.out_chans, 1, 1, 0, false));
  neck_norm1 = append(neck, std::make_shared<LayerNorm2d>(config.out_chans));
  neck_conv2 = append(neck, std::make_shared<Conv2d>(config.out_chans, config.out_chans, 3, 1, 1, false));
  neck_norm2 = append(neck, std::make_shared<LayerNorm2d>(config.out_chans));
  register_module("neck", neck);
}

at::Tensor ImageEncoderViT::forward(const at::Tensor& image) const {
  at::Tensor x = patch_embed->forward(image) + pos_embed;
  for (const auto& block : blocks) x = block->forward(x);
  return neck(x);
}

at::Tensor ImageEncoderViT::neck(const at::Tensor& tokens) const {
  // The 1x1 convolution and the first LayerNorm2d run channels-last, as a matmul.
  at::Tensor x = neck_norm1->forward_channels_last(
      sam::quantized_matmul(neck_conv1->quant, tokens, neck_conv1->weight, at::Tensor(), Activation::kNone));
  x = neck_conv2->forward(x.permute({0, 3, 1, 2}).contiguous());
  return tapped(neck_tap, {tokens}, neck_norm2->forward(x).contiguous());
}

}  // namespace ptq4sam::sam
