#include "sam/mask_decoder.h"

namespace ptq4sam::sam {

MaskDecoder::MaskDecoder(const MaskDecoderConfig& config_)
    : config(config_), num_mask_tokens(config_.num_multimask_outputs + 1) {
  const int64_t dim = config.transformer_dim;
  transformer = register_module("transformer", std::make_shared<TwoWayTransformer>(
                                                   config.transformer_depth, dim, config.transformer_heads,
                                                   config.transformer_mlp_dim, config.attention_downsample_rate));
  iou_token = register_module("iou_token", std::make_shared<Embedding>(1, dim));
  mask_tokens = register_module("mask_tokens", std::make_shared<Embedding>(num_mask_tokens, dim));
  torch::nn::ModuleList upscaling;
  upscale1 = append(upscaling, std::make_shared<ConvTranspose2d>(dim, dim / 4, 2, 2));
  upscale_norm = append(upscaling, std::make_shared<LayerNorm2d>(dim / 4));
  upscaling->push_back(torch::nn::GELU());
  upscale2 = append(upscaling, std::make_shared<ConvTranspose2d>(dim / 4, dim / 8, 2, 2));
  upscaling->push_back(torch::nn::GELU());
  register_module("output_upscaling", upscaling);
  torch::nn::ModuleList hyper;
  for (int64_t i = 0; i < num_mask_tokens; ++i)
    output_hypernetworks_mlps.push_back(append(hyper, std::make_shared<MLP>(dim, dim, dim / 8, 3, kDecoderNumerics)));
  register_module("output_hypernetworks_mlps", hyper);
  iou_prediction_head = register_module(
      "iou_prediction_head", std::make_shared<MLP>(dim, config.iou_head_hidden_dim, num_mask_tokens, config.iou_head_depth, kDecoderNumerics));
}

std::pair<at::Tensor, at::Tensor> MaskDecoder::forward(const at::Tensor& image_embeddings, const at::Tensor& image_pe,
                                                       const at::Tensor& sparse, const at::Tensor& dense,
                                                       bool multimask_output) const {
  const int64_t batch = sparse.size(0);
  const at::Tensor output_tokens = at::cat({iou_token->weight, mask_tokens->weight}, 0).unsqueeze(0).expand({batch, -1, -1});
  const at::Tensor tokens = at::cat({output_tokens, sparse}, 1);
  const at::Tensor src = image_embeddings + dense;  // broadcasts one image over the prompt batch
  const int64_t c = src.size(1), h = src.size(2), w = src.size(3);

  auto [hs, keys] = transformer->forward(src.expand({batch, c, h, w}), image_pe, tokens);
  const at::Tensor iou_token_out = hs.select(1, 0);
  const at::Tensor mask_tokens_out = hs.narrow(1, 1, num_mask_tokens);

  const at::Tensor grid = keys.transpose(1, 2).reshape({batch, c, h, w});
  at::Tensor upscaled = at::gelu(upscale_norm->forward(upscale1->forward(grid)));
  upscaled = at::gelu(upscale2->forward(upscaled));

  std::vector<at::Tensor> hyper_in;
  for (int64_t i = 0; i < num_mask_tokens; ++i)
    hyper_in.push_back(output_hypernetworks_mlps[i]->forward(mask_tokens_out.select(1, i)));
  const at::Tensor hyper = at::stack(hyper_in, 1);
  const int64_t uc = upscaled.size(1), uh = upscaled.size(2), uw = upscaled.size(3);
  at::Tensor masks = at::bmm(hyper, upscaled.view({batch, uc, uh * uw})).view({batch, -1, uh, uw});
  at::Tensor iou_pred = iou_prediction_head->forward(iou_token_out);

  if (multimask_output) return {masks.narrow(1, 1, num_mask_tokens - 1), iou_pred.narrow(1, 1, num_mask_tokens - 1)};
  return {masks.narrow(1, 0, 1), iou_pred.narrow(1, 0, 1)};
}

}  // namespace ptq4sam::sam
