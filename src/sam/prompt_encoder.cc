#include "sam/prompt_encoder.h"

#include <cmath>

namespace ptq4sam::sam {

PositionEmbeddingRandom::PositionEmbeddingRandom(int64_t num_pos_feats) {
  positional_encoding_gaussian_matrix =
      register_buffer("positional_encoding_gaussian_matrix", torch::empty({2, num_pos_feats}));
}

at::Tensor PositionEmbeddingRandom::pe_encoding(const at::Tensor& coords) const {
  // Same order of operations as the official code, so the float32 rounding matches.
  at::Tensor c = 2 * coords - 1;
  c = at::matmul(c, positional_encoding_gaussian_matrix);
  c = 2 * M_PI * c;
  return at::cat({at::sin(c), at::cos(c)}, -1);
}

at::Tensor PositionEmbeddingRandom::forward(int64_t h, int64_t w) const {
  const at::Tensor grid = at::ones({h, w}, at::kFloat);
  const at::Tensor y_embed = (grid.cumsum(0) - 0.5) / double(h);
  const at::Tensor x_embed = (grid.cumsum(1) - 0.5) / double(w);
  return pe_encoding(at::stack({x_embed, y_embed}, -1)).permute({2, 0, 1});
}

at::Tensor PositionEmbeddingRandom::forward_with_coords(const at::Tensor& coords, int64_t height, int64_t width) const {
  at::Tensor c = coords.clone();
  c.select(2, 0).div_(double(width));
  c.select(2, 1).div_(double(height));
  return pe_encoding(c.to(at::kFloat));
}

PromptEncoder::PromptEncoder(int64_t embed_dim_, int64_t image_embedding_size_, int64_t input_image_size_,
                             int64_t mask_in_chans)
    : embed_dim(embed_dim_), image_embedding_size(image_embedding_size_), input_image_size(input_image_size_) {
  pe_layer = register_module("pe_layer", std::make_shared<PositionEmbeddingRandom>(embed_dim / 2));
  torch::nn::ModuleList points;
  for (int i = 0; i < 4; ++i) point_embeddings.push_back(append(points, std::make_shared<Embedding>(1, embed_dim)));
  register_module("point_embeddings", points);
  not_a_point_embed = register_module("not_a_point_embed", std::make_shared<Embedding>(1, embed_dim));
  torch::nn::ModuleList down;
  mask_conv1 = append(down, std::make_shared<Conv2d>(1, mask_in_chans / 4, 2, 2, 0, true));
  mask_norm1 = append(down, std::make_shared<LayerNorm2d>(mask_in_chans / 4));
  down->push_back(torch::nn::GELU());
  mask_conv2 = append(down, std::make_shared<Conv2d>(mask_in_chans / 4, mask_in_chans, 2, 2, 0, true));
  mask_norm2 = append(down, std::make_shared<LayerNorm2d>(mask_in_chans));
  down->push_back(torch::nn::GELU());
  mask_conv3 = append(down, std::make_shared<Conv2d>(mask_in_chans, embed_dim, 1, 1, 0, true));
  register_module("mask_downscaling", down);
  no_mask_embed = register_module("no_mask_embed", std::make_shared<Embedding>(1, embed_dim));
}

at::Tensor PromptEncoder::get_dense_pe() const {
  return pe_layer->forward(image_embedding_size, image_embedding_size).unsqueeze(0);
}

at::Tensor PromptEncoder::embed_points(const at::Tensor& points, const at::Tensor& labels_in, bool pad) const {
  at::Tensor coords = points + 0.5;  // shift to the centre of the pixel
  at::Tensor labels = labels_in;
  if (pad) {
    coords = at::cat({coords, at::zeros({coords.size(0), 1, 2}, coords.options())}, 1);
    labels = at::cat({labels, -at::ones({labels.size(0), 1}, labels.options())}, 1);
  }
  at::Tensor embedding = pe_layer->forward_with_coords(coords, input_image_size, input_image_size);
  const at::Tensor is_pad = (labels == -1).unsqueeze(-1);
  const at::Tensor is_neg = (labels == 0).unsqueeze(-1);
  const at::Tensor is_pos = (labels == 1).unsqueeze(-1);
  embedding = at::where(is_pad, at::zeros_like(embedding), embedding);
  embedding = embedding + is_pad * not_a_point_embed->weight;
  embedding = embedding + is_neg * point_embeddings[0]->weight;
  embedding = embedding + is_pos * point_embeddings[1]->weight;
  return embedding;
}

at::Tensor PromptEncoder::embed_boxes(const at::Tensor& boxes) const {
  const at::Tensor coords = (boxes + 0.5).reshape({-1, 2, 2});
  at::Tensor corners = pe_layer->forward_with_coords(coords, input_image_size, input_image_size);
  const at::Tensor corner_embed = at::cat({point_embeddings[2]->weight, point_embeddings[3]->weight}, 0);
  return corners + corner_embed.unsqueeze(0);
}

at::Tensor PromptEncoder::embed_masks(const at::Tensor& masks) const {
  at::Tensor x = at::gelu(mask_norm1->forward(mask_conv1->forward(masks)));
  x = at::gelu(mask_norm2->forward(mask_conv2->forward(x)));
  return mask_conv3->forward(x);
}

std::pair<at::Tensor, at::Tensor> PromptEncoder::forward(const at::Tensor& points, const at::Tensor& labels,
                                                         const at::Tensor& boxes, const at::Tensor& masks) const {
  const int64_t batch = points.defined() ? points.size(0) : boxes.defined() ? boxes.size(0) : masks.defined() ? masks.size(0) : 1;
  std::vector<at::Tensor> sparse{at::empty({batch, 0, embed_dim}, at::kFloat)};
  if (points.defined()) sparse.push_back(embed_points(points, labels, /*pad=*/!boxes.defined()));
  if (boxes.defined()) sparse.push_back(embed_boxes(boxes));
  at::Tensor dense;
  if (masks.defined()) {
    dense = embed_masks(masks);
  } else {
    dense = no_mask_embed->weight.reshape({1, -1, 1, 1}).expand({batch, -1, image_embedding_size, image_embedding_size});
  }
  return {at::cat(sparse, 1), dense};
}

}  // namespace ptq4sam::sam
