#include "sam/transformer.h"

#include <cmath>

#include "kernels/attention.h"

namespace ptq4sam::sam {

namespace {

// Whether a quantizer's result for one row equals its result for the row within a batch.
bool acts_per_element(const QuantPointPtr& point) {
  return !point || (point->elementwise() && point->stateless() && !point->needs_whole_tensor());
}

bool acts_per_element(const LayerQuantPoints& quant) {
  return acts_per_element(quant.input) && acts_per_element(quant.weight);
}

}  // namespace

Attention::Attention(int64_t embedding_dim, int64_t num_heads_, int64_t downsample_rate, ImageTokens image_tokens)
    : num_heads(num_heads_) {
  const int64_t internal_dim = embedding_dim / downsample_rate;
  const auto numerics = [&](bool on_image) { return on_image ? Numerics::kFast : kDecoderNumerics; };
  const bool image_keys = image_tokens == ImageTokens::kKeys, image_queries = image_tokens == ImageTokens::kQueries;
  q_proj = register_module("q_proj", std::make_shared<Linear>(embedding_dim, internal_dim, true, numerics(image_queries)));
  k_proj = register_module("k_proj", std::make_shared<Linear>(embedding_dim, internal_dim, true, numerics(image_keys)));
  v_proj = register_module("v_proj", std::make_shared<Linear>(embedding_dim, internal_dim, true, numerics(image_keys)));
  out_proj = register_module("out_proj", std::make_shared<Linear>(internal_dim, embedding_dim, true, numerics(image_queries)));
}

at::Tensor Attention::project_q(const at::Tensor& x) const { return quantize_at(quant.q, q_proj->forward(x)); }
at::Tensor Attention::project_k(const at::Tensor& x) const { return quantize_at(quant.k, k_proj->forward(x)); }
at::Tensor Attention::project_v(const at::Tensor& x) const { return quantize_at(quant.v, v_proj->forward(x)); }

at::Tensor Attention::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const {
  return out_proj->forward(kernels::multi_head_attention(q, k, v, num_heads, kernels::ScoreScaling::kDivideScores,
                                                         at::Tensor(), at::Tensor(), softmax_hook(quant.softmax)));
}

at::Tensor Attention::forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in) const {
  // In this order, as the official: a QDrop quantizer draws from the generator.
  const at::Tensor q = project_q(q_in);
  const at::Tensor k = project_k(k_in);
  const at::Tensor v = project_v(v_in);
  return tapped(tap, {q_in, k_in, v_in}, attend(q, k, v));
}

bool Attention::projections_shareable() const {
  return !tap && acts_per_element(quant.q) && acts_per_element(quant.k) && acts_per_element(quant.v) &&
         acts_per_element(q_proj->quant) && acts_per_element(k_proj->quant) && acts_per_element(v_proj->quant);
}

TwoWayAttentionBlock::TwoWayAttentionBlock(int64_t dim, int64_t num_heads, int64_t mlp_dim, int64_t rate,
                                           bool skip_first_layer_pe_)
    : skip_first_layer_pe(skip_first_layer_pe_) {
  self_attn = register_module("self_attn", std::make_shared<Attention>(dim, num_heads));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(dim));
  cross_attn_token_to_image = register_module(
      "cross_attn_token_to_image", std::make_shared<Attention>(dim, num_heads, rate, ImageTokens::kKeys));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(dim));
  mlp = register_module("mlp", std::make_shared<MLPBlock>(dim, mlp_dim, Activation::kRelu, kDecoderNumerics));
  norm3 = register_module("norm3", std::make_shared<LayerNorm>(dim));
  norm4 = register_module("norm4", std::make_shared<LayerNorm>(dim));
  cross_attn_image_to_token = register_module(
      "cross_attn_image_to_token", std::make_shared<Attention>(dim, num_heads, rate, ImageTokens::kQueries));
}

std::pair<at::Tensor, at::Tensor> TwoWayAttentionBlock::forward(const at::Tensor& queries_in, const at::Tensor& keys_in,
                                                                const at::Tensor& query_pe, const at::Tensor& key_pe,
                                                                const SharedImageSide* shared) const {
  at::Tensor queries = queries_in, keys = keys_in;
  const int64_t batch = queries.size(0);
  const auto per_prompt = [batch](const at::Tensor& t) { return t.expand({batch, t.size(1), t.size(2)}); };
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
  const at::Tensor token_to_image =
      shared ? cross_attn_token_to_image->attend(cross_attn_token_to_image->project_q(q),
                                                 per_prompt(shared->token_to_image_k), per_prompt(shared->token_to_image_v))
             : cross_attn_token_to_image->forward(q, keys + key_pe, keys);
  queries = norm2->forward(queries + token_to_image);
  queries = norm3->forward(queries + mlp->forward(queries));
  // The image attends to the tokens.
  q = queries + query_pe;
  const at::Tensor image_to_token =
      shared ? cross_attn_image_to_token->attend(per_prompt(shared->image_to_token_q),
                                                 cross_attn_image_to_token->project_k(q),
                                                 cross_attn_image_to_token->project_v(queries))
             : cross_attn_image_to_token->forward(keys + key_pe, q, queries);
  keys = norm4->forward(keys + image_to_token);
  return {queries, keys};
}

TwoWayTransformer::TwoWayTransformer(int64_t depth, int64_t dim, int64_t num_heads, int64_t mlp_dim, int64_t rate) {
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < depth; ++i)
    layers.push_back(append(list, std::make_shared<TwoWayAttentionBlock>(dim, num_heads, mlp_dim, rate, i == 0)));
  register_module("layers", list);
  final_attn_token_to_image = register_module(
      "final_attn_token_to_image", std::make_shared<Attention>(dim, num_heads, rate, ImageTokens::kKeys));
  norm_final_attn = register_module("norm_final_attn", std::make_shared<LayerNorm>(dim));
}

std::pair<at::Tensor, at::Tensor> TwoWayTransformer::forward(const at::Tensor& image_embedding, const at::Tensor& image_pe,
                                                             const at::Tensor& point_embedding) const {
  const at::Tensor image = image_embedding.flatten(2).permute({0, 2, 1});
  const at::Tensor pe = image_pe.flatten(2).permute({0, 2, 1});
  at::Tensor queries = point_embedding, keys = image;
  for (const auto& layer : layers) std::tie(queries, keys) = layer->forward(queries, keys, point_embedding, pe);
  return {final_attention(queries, keys, point_embedding, pe), keys};
}

bool TwoWayTransformer::shares_image_side() const {
  if (at::GradMode::is_enabled() || layers.empty()) return false;
  return layers[0]->cross_attn_token_to_image->projections_shareable() &&
         layers[0]->cross_attn_image_to_token->projections_shareable();
}

SharedImageSide TwoWayTransformer::image_side(const at::Tensor& image_embedding, const at::Tensor& image_pe) const {
  SharedImageSide side;
  side.keys = image_embedding.flatten(2).permute({0, 2, 1}).contiguous();
  side.key_pe = image_pe.flatten(2).permute({0, 2, 1}).contiguous();
  const at::Tensor keys_with_pe = side.keys + side.key_pe;
  const TwoWayAttentionBlock& first = *layers.at(0);
  side.token_to_image_k = first.cross_attn_token_to_image->project_k(keys_with_pe);
  side.token_to_image_v = first.cross_attn_token_to_image->project_v(side.keys);
  side.image_to_token_q = first.cross_attn_image_to_token->project_q(keys_with_pe);
  return side;
}

std::pair<at::Tensor, at::Tensor> TwoWayTransformer::forward(const SharedImageSide& image,
                                                             const at::Tensor& point_embedding) const {
  at::Tensor queries = point_embedding, keys = image.keys;
  for (size_t i = 0; i < layers.size(); ++i)
    std::tie(queries, keys) =
        layers[i]->forward(queries, keys, point_embedding, image.key_pe, i == 0 ? &image : nullptr);
  return {final_attention(queries, keys, point_embedding, image.key_pe), keys};
}

at::Tensor TwoWayTransformer::final_attention(const at::Tensor& queries, const at::Tensor& keys,
                                              const at::Tensor& point_embedding, const at::Tensor& pe) const {
  const at::Tensor q = queries + point_embedding;
  const at::Tensor k = keys + pe;
  return norm_final_attn->forward(queries + final_attn_token_to_image->forward(q, k, keys));
}

}  // namespace ptq4sam::sam
