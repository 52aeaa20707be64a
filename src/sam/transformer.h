#pragma once
// SAM's two-way transformer (segment_anything/modeling/transformer.py).
#include <torch/torch.h>

#include "sam/common.h"

namespace ptq4sam::sam {

// The decoder reproduces PyTorch's op order (see kernels::Numerics).
constexpr Numerics kDecoderNumerics = Numerics::kReference;

// Which of an attention's inputs are the 4096 image tokens. Their projections are the
// decoder's big products and run on oneDNN; the few prompt tokens' keep PyTorch's op order.
enum class ImageTokens { kNone, kKeys, kQueries };

// Attention with optional downscaling of the embedding size after projection to q, k, v.
class Attention : public torch::nn::Module {
 public:
  Attention(int64_t embedding_dim, int64_t num_heads, int64_t downsample_rate = 1,
            ImageTokens image_tokens = ImageTokens::kNone);
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
  // forward's halves: each input through its projection and quantizer, and the attention of
  // projected q, k, v through out_proj. forward(q, k, v) == attend(project_q(q), ...).
  at::Tensor project_q(const at::Tensor& x) const;
  at::Tensor project_k(const at::Tensor& x) const;
  at::Tensor project_v(const at::Tensor& x) const;
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
  // Whether a projection of one copy of an input equals the projection of it inside a batch:
  // no tap, and every quantizer of the projections acts element by element without state.
  bool projections_shareable() const;
  int64_t num_heads;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;
  AttentionQuantPoints quant;
  BlockTap tap;
};

// The two-way transformer's image side before its first block, which every prompt of an image
// shares when its dense embedding does (no mask prompt): the keys (image embedding + dense
// embedding) and their positional encoding, channels-last (1, HW, C), and the first block's
// projections of them (1, HW, C'), computed once per image instead of once per prompt.
struct SharedImageSide {
  at::Tensor keys, key_pe;
  at::Tensor token_to_image_k, token_to_image_v, image_to_token_q;
};

class TwoWayAttentionBlock : public torch::nn::Module {
 public:
  TwoWayAttentionBlock(int64_t embedding_dim, int64_t num_heads, int64_t mlp_dim, int64_t attention_downsample_rate,
                       bool skip_first_layer_pe);
  // Updates (queries, keys). With `shared` (the first block only), keys and key_pe are its
  // (1, HW, C) keys and the image-side projections come from it.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& queries, const at::Tensor& keys,
                                            const at::Tensor& query_pe, const at::Tensor& key_pe,
                                            const SharedImageSide* shared = nullptr) const;
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
  // Whether image_side() may stand for every prompt's copy now (no gradient, no observer, no
  // tap on the first block's image-side projections).
  bool shares_image_side() const;
  // image_embedding, image_pe (1, C, H, W): the part of forward that no prompt changes.
  SharedImageSide image_side(const at::Tensor& image_embedding, const at::Tensor& image_pe) const;
  // forward for point_embedding (B, N, C) from an image side: the same numbers as forward.
  std::pair<at::Tensor, at::Tensor> forward(const SharedImageSide& image, const at::Tensor& point_embedding) const;
  std::vector<std::shared_ptr<TwoWayAttentionBlock>> layers;
  std::shared_ptr<Attention> final_attn_token_to_image;
  std::shared_ptr<LayerNorm> norm_final_attn;

 private:
  at::Tensor final_attention(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& point_embedding,
                             const at::Tensor& pe) const;
};

}  // namespace ptq4sam::sam
