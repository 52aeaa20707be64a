#pragma once
// SAM's prompt encoder (segment_anything/modeling/prompt_encoder.py).
#include <torch/torch.h>

#include "sam/common.h"

namespace ptq4sam::sam {

// Positional encoding with random spatial frequencies (PositionEmbeddingRandom).
class PositionEmbeddingRandom : public torch::nn::Module {
 public:
  explicit PositionEmbeddingRandom(int64_t num_pos_feats);
  // Dense encoding of an h x w grid: (2F, h, w).
  at::Tensor forward(int64_t h, int64_t w) const;
  // Points (B, N, 2) in input pixels of an image of (height, width) -> (B, N, 2F).
  at::Tensor forward_with_coords(const at::Tensor& coords, int64_t height, int64_t width) const;
  at::Tensor positional_encoding_gaussian_matrix;  // a buffer, as in the official module

 private:
  at::Tensor pe_encoding(const at::Tensor& coords) const;
};

class PromptEncoder : public torch::nn::Module {
 public:
  PromptEncoder(int64_t embed_dim, int64_t image_embedding_size, int64_t input_image_size, int64_t mask_in_chans);

  // Inputs in the model's input frame (after ResizeLongestSide): points (B, N, 2) with labels
  // (B, N) (1 foreground, 0 background, -1 padding), boxes (B, 4), masks (B, 1, 4E, 4E); any
  // may be undefined. Returns sparse (B, n, D) and dense (B, D, E, E) embeddings.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& points, const at::Tensor& labels,
                                            const at::Tensor& boxes, const at::Tensor& masks) const;
  // Positional encoding of the image embedding grid, (1, D, E, E).
  at::Tensor get_dense_pe() const;

  int64_t embed_dim, image_embedding_size, input_image_size;
  std::shared_ptr<PositionEmbeddingRandom> pe_layer;
  std::vector<std::shared_ptr<Embedding>> point_embeddings;
  std::shared_ptr<Embedding> not_a_point_embed, no_mask_embed;
  std::shared_ptr<Conv2d> mask_conv1, mask_conv2, mask_conv3;
  std::shared_ptr<LayerNorm2d> mask_norm1, mask_norm2;

 private:
  at::Tensor embed_points(const at::Tensor& points, const at::Tensor& labels, bool pad) const;
  at::Tensor embed_boxes(const at::Tensor& boxes) const;
  at::Tensor embed_masks(const at::Tensor& masks) const;
};

}  // namespace ptq4sam::sam
