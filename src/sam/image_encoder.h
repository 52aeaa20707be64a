#pragma once
// SAM's ViT image encoder (segment_anything/modeling/image_encoder.py).
#include <torch/torch.h>

#include <vector>

#include "sam/common.h"

namespace ptq4sam::sam {

struct ImageEncoderConfig {
  int64_t img_size = 1024;
  int64_t patch_size = 16;
  int64_t in_chans = 3;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t mlp_dim = 3072;
  int64_t out_chans = 256;
  int64_t window_size = 14;
  bool use_rel_pos = true;
  std::vector<int64_t> global_attn_indexes{2, 5, 8, 11};
  int64_t grid_size() const { return img_size / patch_size; }
};

// Multi-head attention with decomposed relative position embeddings, on (B, H, W, C) input.
class EncoderAttention : public torch::nn::Module {
 public:
  EncoderAttention(int64_t dim, int64_t num_heads, bool use_rel_pos, int64_t input_size);
  at::Tensor forward(const at::Tensor& x) const;
  // Whether forward_on_codes serves: integer attention, no autograd, no tap (which would expect
  // the partitioned windows and the attention apart from the residual).
  bool on_codes() const;
  // residual (where defined) + the attention of (B, H, W, C) input x: global (window_size 0),
  // or windowed as window_unpartition(forward(window_partition(x))) without the partition's
  // copies (kernels::quantized_window_attention). The residual is added in proj's output pass.
  // Needs integer attention and no autograd; forward's integer path calls it without a
  // residual, so that a tap sees the attention alone.
  at::Tensor forward_on_codes(const at::Tensor& x, int64_t window_size, const at::Tensor& residual) const;
  // get_rel_pos's tables for an h x w attention (both undefined without relative positions).
  std::pair<at::Tensor, at::Tensor> rel_pos_tables(int64_t h, int64_t w) const;
  int64_t num_heads;
  std::shared_ptr<Linear> qkv, proj;
  at::Tensor rel_pos_h, rel_pos_w;
  AttentionQuantPoints quant;
  BlockTap tap;
};

// Transformer block with windowed (window_size > 0) or global attention.
class EncoderBlock : public torch::nn::Module {
 public:
  EncoderBlock(const ImageEncoderConfig& config, int64_t window_size);
  at::Tensor forward(const at::Tensor& x) const;
  // x + attn(norm1(x)), windowed as the official block does.
  at::Tensor add_attention(const at::Tensor& x) const;
  // z + mlp(norm2(z)).
  at::Tensor add_mlp(const at::Tensor& z) const;
  int64_t window_size;
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<EncoderAttention> attn;
  std::shared_ptr<MLPBlock> mlp;
};

class PatchEmbed : public torch::nn::Module {
 public:
  PatchEmbed(int64_t patch_size, int64_t in_chans, int64_t embed_dim);
  // (B, C, H, W) image -> (B, H/p, W/p, embed_dim) tokens.
  at::Tensor forward(const at::Tensor& x) const;
  std::shared_ptr<Conv2d> proj;
};

class ImageEncoderViT : public torch::nn::Module {
 public:
  explicit ImageEncoderViT(const ImageEncoderConfig& config);
  // (B, 3, img_size, img_size) normalised, padded image -> (B, out_chans, grid, grid).
  at::Tensor forward(const at::Tensor& x) const;
  // The neck on the last block's (B, H, W, C) tokens -> (B, out_chans, H, W).
  at::Tensor neck(const at::Tensor& tokens) const;

  ImageEncoderConfig config;
  std::shared_ptr<PatchEmbed> patch_embed;
  at::Tensor pos_embed;
  std::vector<std::shared_ptr<EncoderBlock>> blocks;
  std::shared_ptr<Conv2d> neck_conv1, neck_conv2;
  std::shared_ptr<LayerNorm2d> neck_norm1, neck_norm2;
  BlockTap neck_tap;
};

// Window partition with zero padding, as the official window_partition: (B, H, W, C) ->
// (B * nWindows, ws, ws, C); padded_hw receives (Hp, Wp).
at::Tensor window_partition(const at::Tensor& x, int64_t window_size, std::pair<int64_t, int64_t>& padded_hw);
at::Tensor window_unpartition(const at::Tensor& windows, int64_t window_size, std::pair<int64_t, int64_t> padded_hw,
                              std::pair<int64_t, int64_t> hw);

// The official get_rel_pos: relative positional embeddings for q_size x k_size, interpolating
// the table linearly when its length differs from 2 * max(q_size, k_size) - 1.
at::Tensor get_rel_pos(int64_t q_size, int64_t k_size, const at::Tensor& rel_pos);

}  // namespace ptq4sam::sam
