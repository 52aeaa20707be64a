#include "sam/mask_decoder.h"

#include <cmath>

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
  const at::Tensor src = image_embeddings + dense;  // broadcasts one image over the prompt batch
  const int64_t c = src.size(1), h = src.size(2), w = src.size(3);
  auto [hs, keys] = transformer->forward(src.expand({batch, c, h, w}), image_pe, prompt_tokens(sparse));
  return predict_masks(hs, keys, multimask_output);
}

SharedImageSide MaskDecoder::image_side(const at::Tensor& image_embeddings, const at::Tensor& image_pe,
                                        const at::Tensor& dense) const {
  return transformer->image_side(image_embeddings + dense, image_pe);
}

std::pair<at::Tensor, at::Tensor> MaskDecoder::forward(const SharedImageSide& image, const at::Tensor& sparse,
                                                       bool multimask_output) const {
  auto [hs, keys] = transformer->forward(image, prompt_tokens(sparse));
  return predict_masks(hs, keys, multimask_output);
}

at::Tensor MaskDecoder::prompt_tokens(const at::Tensor& sparse) const {
  const at::Tensor output_tokens =
      at::cat({iou_token->weight, mask_tokens->weight}, 0).unsqueeze(0).expand({sparse.size(0), -1, -1});
  return at::cat({output_tokens, sparse}, 1);
}

MaskDecoder::UpscalingProducts MaskDecoder::upscaling_products() const {
  // A 2 x 2, stride-2 transposed convolution writes each output pixel from one input pixel, so it
  // is one product per input pixel with the kernel's taps as extra outputs: rows of the weight
  // in (tap row, tap column, channel) order put each output pixel's channels side by side for
  // the LayerNorm2d over them, and the pixels stay channels-last throughout.
  const auto as_linear = [](const ConvTranspose2d& conv) {
    const at::Tensor& w = conv.weight;  // (in, out, 2, 2)
    return std::make_pair(w.permute({2, 3, 1, 0}).reshape({-1, w.size(0)}).contiguous(), conv.bias.repeat({4}));
  };
  UpscalingProducts p;
  std::tie(p.w1, p.b1) = as_linear(*upscale1);
  std::tie(p.w2, p.b2) = as_linear(*upscale2);
  return p;
}

at::Tensor MaskDecoder::upscale(const at::Tensor& keys, const UpscalingProducts& p) const {
  const int64_t batch = keys.size(0), c1 = upscale1->weight.size(1), c2 = upscale2->weight.size(1);
  at::Tensor x = kernels::linear(keys, p.w1, p.b1).view({batch, -1, c1});
  x = at::gelu(upscale_norm->forward_channels_last(x));
  return kernels::linear(x, p.w2, p.b2, Activation::kGelu).view({batch, -1, c2});
}

std::pair<at::Tensor, at::Tensor> MaskDecoder::predict_masks(const at::Tensor& hs, const at::Tensor& keys,
                                                             bool multimask_output) const {
  const int64_t batch = hs.size(0), side = int64_t(std::lround(std::sqrt(double(keys.size(1)))));
  const at::Tensor iou_token_out = hs.select(1, 0);
  const at::Tensor mask_tokens_out = hs.narrow(1, 1, num_mask_tokens);
  // Only the masks returned are computed: each is its token's product with the same pixels.
  const int64_t first = multimask_output ? 1 : 0, count = multimask_output ? num_mask_tokens - 1 : 1;
  std::vector<at::Tensor> hyper_in;
  for (int64_t i = first; i < first + count; ++i)
    hyper_in.push_back(output_hypernetworks_mlps[i]->forward(mask_tokens_out.select(1, i)));
  const at::Tensor hyper = at::stack(hyper_in, 2);  // (B, C / 8, masks)
  // Pixels come in (row, column, tap row, tap column, tap row, tap column) order of the two
  // upscalings; the low-res mask row is 4 row + 2 tap row + second tap row, and so for columns.
  // One prompt at a time: its upscaled pixels (8 MB at ViT scale) stay in cache for the product.
  const UpscalingProducts products = upscaling_products();
  at::Tensor pixels = at::empty({batch, keys.size(1) * 16, count}, hs.options());
  for (int64_t b = 0; b < batch; ++b) {
    at::Tensor out = pixels[b];
    at::mm_out(out, upscale(keys.narrow(0, b, 1), products)[0], hyper[b]);
  }
  // Returned as the official's slice of all the tokens' masks, strides included: for one mask
  // per prompt a contiguous (B, 1, H, W) tensor also reads as channels-last, which sends ATen's
  // upsampling (postprocess_masks) down its channels-last kernel, 2.5x slower here.
  const at::Tensor all = at::empty({batch, num_mask_tokens, 4 * side, 4 * side}, hs.options());
  const at::Tensor masks = all.narrow(1, first, count);
  masks.view({batch, count, side, 2, 2, side, 2, 2})
      .copy_(pixels.view({batch, side, side, 2, 2, 2, 2, count}).permute({0, 7, 1, 3, 5, 2, 4, 6}));
  const at::Tensor iou_pred = iou_prediction_head->forward(iou_token_out);
  return {masks, iou_pred.narrow(1, first, count)};
}

}  // namespace ptq4sam::sam
