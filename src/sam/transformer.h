#pragma once
// SAM's two-way transformer (segment_anything/modeling/transformer.py).
#include <torch/torch.h>

#include "sam/common.h"

namespace ptq4sam::sam {

// The decoder reproduces PyTorch's op order (see kernels::Numerics).
constexpr Numerics kDecoderNumerics = Numerics::kReference;

// Attention with optional downscaling of the embedding size after projection to q, k, v.
class Attention : public torch::nn::Module {
 public:
  Attention(int64_t embedding_dim, int64_t num_heads, int64_t downsample_rate = 1);
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
  int64_t num_heads;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;
  AttentionQuantPoints quant;
  BlockTap tap;
};

class TwoWayAttentionBlock : public torch::nn::Module {
 public:
  TwoWayAttentionBlock(int64_t embedding_dim, int64_t num_heads, int64_t mlp_dim, int64_t attention_downsample_rate,
                       bool skip_first_layer_pe);
  // Updates (queries, keys).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& queries, const at::Tensor& keys,
                                            const at::Tensor& query_pe, const at::Tensor& key_pe) const;
  bool skip_first_layer_pe;
  std::shared_ptr<Attention> self_attn, cross_attn_token_to_image, cross_attn_image_to_token;
  std::shared_ptr<LayerNorm> norm1, norm2, norm3, norm4;
  std::shared_ptr<MLPBlock> mlp;
};

class TwoWayTransformer : public torch::nn::Module {
 public:
  TwoWayTransformer(int64_t depth, int64_t embedding_dim, int64_t num_heads, int64_t mlp_dim,
                    int64_t attention_downsample_rate = 2);
  // image_embedding, image_pe (B, C, H, W); point_embedding (B, N, C) -> (queries, keys).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& image_embedding, const at::Tensor& image_pe,
                                            const at::Tensor& point_embedding) const;
  std::vector<std::shared_ptr<TwoWayAttentionBlock>> layers;
  std::shared_ptr<Attention> final_attn_token_to_image;
  std::shared_ptr<LayerNorm> norm_final_attn;
};

}  // namespace ptq4sam::sam
