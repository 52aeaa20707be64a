#include "eval/instance_seg.h"

#include "coco/rle.h"

namespace ptq4sam::eval {

ImageSegmentation segment_boxes(sam::Predictor& predictor, const at::Tensor& image, int64_t image_id,
                                const std::vector<BoxPrompt>& boxes) {
  ImageSegmentation out{nlohmann::json::array(), at::Tensor()};
  const int64_t h = image.size(0), w = image.size(1);
  if (boxes.empty()) {
    out.masks = at::zeros({0, h, w}, at::kBool);
    return out;
  }
  predictor.set_image(image);
  std::vector<sam::Prompt> prompts(boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) prompts[i].box = sam::Box{boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1};
  const sam::Prediction pred = predictor.predict(prompts, /*multimask_output=*/false);
  out.masks = pred.masks.select(1, 0).contiguous();
  const at::Tensor masks_u8 = out.masks.to(at::kByte);
  for (size_t i = 0; i < boxes.size(); ++i) {
    const coco::Rle rle = coco::encode(masks_u8[int64_t(i)].data_ptr<uint8_t>(), h, w);
    const double iou = pred.iou[int64_t(i)][0].item<double>();
    const BoxPrompt& b = boxes[i];
    out.results.push_back({{"image_id", image_id},
                           {"category_id", b.category_id},
                           {"segmentation", {{"size", {h, w}}, {"counts", coco::to_string(rle)}}},
                           {"bbox", {b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0}},
                           {"score", b.score * iou}});
  }
  return out;
}

}  // namespace ptq4sam::eval
