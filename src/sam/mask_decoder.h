#pragma once
// SAM's mask decoder (segment_anything/modeling/mask_decoder.py).
#include <torch/torch.h>

#include "sam/common.h"
#include "sam/transformer.h"

namespace ptq4sam::sam {

struct MaskDecoderConfig {
  int64_t transformer_dim = 256;
  int64_t transformer_depth = 2;
  int64_t transformer_heads = 8;  // not recoverable from shapes: every SAM uses 8
  int64_t transformer_mlp_dim = 2048;
  int64_t attention_downsample_rate = 2;
  int64_t num_multimask_outputs = 3;
  int64_t iou_head_depth = 3;
  int64_t iou_head_hidden_dim = 256;
};

class MaskDecoder : public torch::nn::Module {
 public:
  explicit MaskDecoder(const MaskDecoderConfig& config);

  // image_embeddings (1 or B, C, E, E), image_pe (1, C, E, E), sparse (B, n, C), dense
  // (B, C, E, E). Returns low-res mask logits (B, M, 4E, 4E) and predicted IoUs (B, M), with
  // M = 3 (masks 1..3) for multimask output, else 1 (mask 0).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& image_embeddings, const at::Tensor& image_pe,
                                            const at::Tensor& sparse_prompt_embeddings,
                                            const at::Tensor& dense_prompt_embeddings, bool multimask_output) const;
  // What forward computes from the image alone, for an image embedding (1, C, E, E) and a dense
  // embedding (1, C, E, E) that every prompt shares (see TwoWayTransformer::shares_image_side).
  SharedImageSide image_side(const at::Tensor& image_embeddings, const at::Tensor& image_pe,
                             const at::Tensor& dense_prompt_embeddings) const;
  // forward from an image side: the same outputs for the sparse embeddings (B, n, C).
  std::pair<at::Tensor, at::Tensor> forward(const SharedImageSide& image, const at::Tensor& sparse_prompt_embeddings,
                                            bool multimask_output) const;

  MaskDecoderConfig config;
  int64_t num_mask_tokens;
  std::shared_ptr<TwoWayTransformer> transformer;
  std::shared_ptr<Embedding> iou_token, mask_tokens;
  std::shared_ptr<ConvTranspose2d> upscale1, upscale2;
  std::shared_ptr<LayerNorm2d> upscale_norm;
  std::vector<std::shared_ptr<MLP>> output_hypernetworks_mlps;
  std::shared_ptr<MLP> iou_prediction_head;

 private:
  // The iou and mask tokens followed by the prompt's sparse embeddings (B, n, C).
  at::Tensor prompt_tokens(const at::Tensor& sparse) const;
  // The outputs from the transformer's tokens hs (B, n, C) and image keys (B, E*E, C).
  std::pair<at::Tensor, at::Tensor> predict_masks(const at::Tensor& hs, const at::Tensor& keys,
                                                  bool multimask_output) const;
  // output_upscaling's two transposed convolutions as the weights and biases of products per
  // input pixel, made once per decoder call.
  struct UpscalingProducts {
    at::Tensor w1, b1, w2, b2;
  };
  UpscalingProducts upscaling_products() const;
  // output_upscaling on channels-last keys (B, E*E, C): (B, (4E)^2, C / 8), its pixels in
  // the order predict_masks describes.
  at::Tensor upscale(const at::Tensor& keys, const UpscalingProducts& products) const;
};

}  // namespace ptq4sam::sam
