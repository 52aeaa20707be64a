#include "sam/predictor.h"

#include <sstream>

#include "util/error.h"

namespace ptq4sam::sam {

Box clip_box(const Box& box, int64_t width, int64_t height, const std::string& where) {
  const bool finite = std::isfinite(box.x0) && std::isfinite(box.y0) && std::isfinite(box.x1) && std::isfinite(box.y1);
  if (!finite) throw Error(where, "box has a non-finite coordinate");
  if (box.x1 < box.x0 || box.y1 < box.y0) throw Error(where, "box has x1 < x0 or y1 < y0");
  if (box.x1 < 0 || box.y1 < 0 || box.x0 > double(width) || box.y0 > double(height)) {
    std::ostringstream s;
    s << "box lies entirely outside the " << width << "x" << height << " image";
    throw Error(where, s.str());
  }
  return Box{std::clamp(box.x0, 0.0, double(width)), std::clamp(box.y0, 0.0, double(height)),
             std::clamp(box.x1, 0.0, double(width)), std::clamp(box.y1, 0.0, double(height))};
}

void check_point(const Point& point, int64_t width, int64_t height, const std::string& where) {
  if (!std::isfinite(point.x) || !std::isfinite(point.y) || point.x < 0 || point.y < 0 || point.x > double(width) ||
      point.y > double(height)) {
    std::ostringstream s;
    s << "point lies outside the " << width << "x" << height << " image";
    throw Error(where, s.str());
  }
  if (point.label != 0 && point.label != 1) throw Error(where, "point label must be 1 (foreground) or 0 (background)");
}

Predictor::Predictor(std::shared_ptr<Sam> model)
    : model_(std::move(model)), transform_(model_->config.encoder.img_size) {}

void Predictor::set_image(const at::Tensor& image) {
  if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != at::kByte)
    throw Error("set_image", "expected an H x W x 3 uint8 RGB image");
  const at::Tensor resized = transform_.apply_image(image);
  set_torch_image(resized.permute({2, 0, 1}).contiguous(), {image.size(0), image.size(1)});
}

void Predictor::set_torch_image(const at::Tensor& input_image, std::pair<int64_t, int64_t> original_size) {
  torch::NoGradGuard no_grad;
  original_size_ = original_size;
  input_size_ = {input_image.size(-2), input_image.size(-1)};
  const at::Tensor x = model_->preprocess(input_image.to(at::kFloat).reshape({1, 3, input_size_.first, input_size_.second}));
  features_ = model_->image_encoder->forward(x);
  image_side_ = std::make_shared<ImageSideCache>();
}

void Predictor::set_features(const at::Tensor& features, std::pair<int64_t, int64_t> input_size,
                             std::pair<int64_t, int64_t> original_size) {
  features_ = features.to(at::kFloat).contiguous();
  image_side_ = std::make_shared<ImageSideCache>();
  input_size_ = input_size;
  original_size_ = original_size;
}

Prediction Predictor::predict(const std::vector<Prompt>& prompts, bool multimask_output, bool return_logits) const {
  if (!features_.defined()) throw Error("predict", "no image set");
  if (prompts.empty()) throw Error("predict", "no prompts");
  torch::NoGradGuard no_grad;
  const int64_t batch = int64_t(prompts.size());
  const size_t n_points = prompts[0].points.size();
  const bool with_box = prompts[0].box.has_value(), with_mask = prompts[0].mask_input.defined();
  for (const auto& p : prompts)
    if (p.points.size() != n_points || p.box.has_value() != with_box || p.mask_input.defined() != with_mask)
      throw Error("predict", "prompts of one batch must have the same structure");
  if (n_points == 0 && !with_box && !with_mask) throw Error("predict", "a prompt needs points, a box or a mask");

  at::Tensor coords, labels, boxes, masks;
  if (n_points > 0) {
    coords = at::empty({batch, int64_t(n_points), 2}, at::kDouble);
    labels = at::empty({batch, int64_t(n_points)}, at::kInt);
    for (int64_t b = 0; b < batch; ++b)
      for (size_t i = 0; i < n_points; ++i) {
        coords[b][i][0] = prompts[b].points[i].x;
        coords[b][i][1] = prompts[b].points[i].y;
        labels[b][i] = prompts[b].points[i].label;
      }
    coords = transform_.apply_coords(coords, original_size_).to(at::kFloat);
  }
  if (with_box) {
    boxes = at::empty({batch, 4}, at::kDouble);
    for (int64_t b = 0; b < batch; ++b) {
      const Box& box = *prompts[b].box;
      boxes[b][0] = box.x0;
      boxes[b][1] = box.y0;
      boxes[b][2] = box.x1;
      boxes[b][3] = box.y1;
    }
    boxes = transform_.apply_boxes(boxes, original_size_).to(at::kFloat);
  }
  if (with_mask) {
    std::vector<at::Tensor> list;
    for (const auto& p : prompts) list.push_back(p.mask_input.to(at::kFloat).reshape({1, p.mask_input.size(-2), p.mask_input.size(-1)}));
    masks = at::stack(list, 0);
  }
  return predict_torch(coords, labels, boxes, masks, multimask_output, return_logits);
}

Prediction Predictor::predict_torch(const at::Tensor& coords, const at::Tensor& labels, const at::Tensor& boxes,
                                    const at::Tensor& masks, bool multimask_output, bool return_logits) const {
  if (!features_.defined()) throw Error("predict", "no image set");
  torch::NoGradGuard no_grad;
  const at::Tensor& first = coords.defined() ? coords : boxes.defined() ? boxes : masks;
  if (!first.defined()) throw Error("predict", "a prompt needs points, a box or a mask");
  const int64_t batch = first.size(0);
  // Fixed-size chunks bound the decoder's memory (each prompt carries a copy of the image
  // embedding through the transformer) and keep every prompt's numbers independent of how
  // many others share its image.
  std::vector<at::Tensor> all_masks, all_iou, all_low_res;
  const int64_t chunk = decoder_chunk_ > 0 ? decoder_chunk_ : batch;
  for (int64_t start = 0; start < batch; start += chunk) {
    const int64_t n = std::min(chunk, batch - start);
    const auto slice = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, start, n) : t; };
    auto [low_res, iou] = decode(slice(coords), slice(labels), slice(boxes), slice(masks), multimask_output);
    at::Tensor upscaled = upscale(low_res);
    if (!return_logits) upscaled = upscaled > Sam::kMaskThreshold;
    all_masks.push_back(upscaled);
    all_iou.push_back(iou);
    all_low_res.push_back(low_res);
  }
  if (all_masks.size() == 1) return {all_masks[0], all_iou[0], all_low_res[0]};
  return {at::cat(all_masks), at::cat(all_iou), at::cat(all_low_res)};
}

std::pair<at::Tensor, at::Tensor> Predictor::decode(const at::Tensor& coords, const at::Tensor& labels,
                                                    const at::Tensor& boxes, const at::Tensor& masks,
                                                    bool multimask_output) const {
  if (!features_.defined()) throw Error("predict", "no image set");
  torch::NoGradGuard no_grad;
  const auto [sparse, dense] = model_->prompt_encoder->forward(coords, labels, boxes, masks);
  const MaskDecoder& decoder = *model_->mask_decoder;
  // Without mask inputs every prompt's dense embedding is the same no-mask embedding.
  if (!masks.defined() && features_.size(0) == 1 && decoder.transformer->shares_image_side())
    return decoder.forward(*image_side(dense), sparse, multimask_output);
  return decoder.forward(features_, model_->prompt_encoder->get_dense_pe(), sparse, dense, multimask_output);
}

std::shared_ptr<const SharedImageSide> Predictor::image_side(const at::Tensor& dense) const {
  const std::shared_ptr<ImageSideCache> cache = image_side_;
  const std::lock_guard<std::mutex> lock(cache->mutex);
  if (!cache->side)
    cache->side = std::make_shared<const SharedImageSide>(
        model_->mask_decoder->image_side(features_, model_->prompt_encoder->get_dense_pe(), dense.narrow(0, 0, 1)));
  return cache->side;
}

at::Tensor Predictor::upscale(const at::Tensor& low_res) const {
  torch::NoGradGuard no_grad;
  return model_->postprocess_masks(low_res, input_size_, original_size_);
}

}  // namespace ptq4sam::sam
