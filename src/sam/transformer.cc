#include "sam/transformer.h"

#include <cmath>

#include "kernels/attention.h"

namespace ptq4sam::sam {

Attention::Attention(int64_t embedding_dim, int64_t num_heads_, int64_t downsample_rate) : num_heads(num_heads_) {
  const int64_t internal_dim = embedding_dim / downsample_rate;
  q_proj = register_module("q_proj", std::make_shared<Linear>(embedding_dim, internal_dim, true, kDecoderNumerics));
  k_proj = register_module("k_proj", std::make_shared<Linear>(embedding_dim, internal_dim, true, kDecoderNumerics));
  v_proj = register_module("v_proj", std::make_shared<Linear>(embedding_dim, internal_dim, true, kDecoderNumerics));
  out_proj = register_module("out_proj", std::make_shared<Linear>(internal_dim, embedding_dim, true, kDecoderNumerics));
}

at::Tensor Attention::forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in) const {
  const at::Tensor q = quantize_at(quant.q, q_proj->forward(q_in)), k = quantize_at(quant.k, k_proj->forward(k_in)),
                   v = quantize_at(quant.v, v_proj->forward(v_in));
  return tapped(tap, {q_in, k_in, v_in},
                out_proj->forward(kernels::multi_head_attention(q, k, v, num_heads, kernels::ScoreScaling::kDivideScores,
                                                                at::Tensor(), at::Tensor(), softmax_hook(quant.softmax))));
}

TwoWayAttentionBlock::TwoWayAttentionBlock(int64_t dim, int64_t num_heads, int64_t mlp_dim, int64_t rate,
                                           bool skip_first_layer_pe_)
    : skip_first_layer_pe(skip_first_layer_pe_) {
  self_attn = register_module("self_attn", std::make_shared<Attention>(dim, num_heads));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(dim));
  cross_attn_token_to_image = register_module("cross_attn_token_to_image", std::make_shared<Attention>(dim, num_heads, rate));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(dim));
  mlp = register_module("mlp", std::make_shared<MLPBlock>(dim, mlp_dim, Activation::kRelu, kDecoderNumerics));
  norm3 = register_module("norm3", std::make_shared<LayerNorm>(dim));
  norm4 = register_module("norm4", std::make_shared<LayerNorm>(dim));
  cross_attn_image_to_token = register_module("cross_attn_image_to_token", std::make_shared<Attention>(dim, num_heads, rate));
}

std::pair<at::Tensor, at::Tensor> TwoWayAttentionBlock::forward(const at::Tensor& queries_in, const at::Tensor& keys_in,
                                                                const at::Tensor& query_pe, const at::Tensor& key_pe) const {
  at::Tensor queries = queries_in, keys = keys_in;
  // Self attention of the sparse tokens.
  if (skip_first_layer_pe) {
    queries = self_attn->forward(queries, queries, queries);
  } else {
    const at::Tensor q = queries + query_pe;
    queries = queries + self_attn->forward(q, q, queries);
  }
  queries = norm1->forward(queries);
  // Tokens attend to the image.
  at::Tensor q = queries + query_pe;
  at::Tensor k = keys + key_pe;
  queries = norm2->forward(queries + cross_attn_token_to_image->forward(q, k, keys));
  queries = norm3->forward(queries + mlp->forward(queries));
  // The image attends to the tokens.
  q = queries + query_pe;
  k = keys + key_pe;
  keys = norm4->forward(keys + cross_attn_image_to_token->forward(k, q, queries));
  return {queries, keys};
}

TwoWayTransformer::TwoWayTransformer(int64_t depth, int64_t dim, int64_t num_heads, int64_t mlp_dim, int64_t rate) {
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < depth; ++i)
    layers.push_back(append(list, std::make_shared<TwoWayAttentionBlock>(dim, num_heads, mlp_dim, rate, i == 0)));
  register_module("layers", list);
  final_attn_token_to_image = register_module("final_attn_token_to_image", std::make_shared<Attention>(dim, num_heads, rate));
  norm_final_attn = register_module("norm_final_attn", std::make_shared<LayerNorm>(dim));
}

std::pair<at::Tensor, at::Tensor> TwoWayTransformer::forward(const at::Tensor& image_embedding, const at::Tensor& image_pe,
                                                             const at::Tensor& point_embedding) const {
  const at::Tensor image = image_embedding.flatten(2).permute({0, 2, 1});
  const at::Tensor pe = image_pe.flatten(2).permute({0, 2, 1});
  at::Tensor queries = point_embedding, keys = image;
  for (const auto& layer : layers) std::tie(queries, keys) = layer->forward(queries, keys, point_embedding, pe);
  const at::Tensor q = queries + point_embedding;
  const at::Tensor k = keys + pe;
  queries = norm_final_attn->forward(queries + final_attn_token_to_image->forward(q, k, keys));
  return {queries, keys};
}

}  // namespace ptq4sam::sam
