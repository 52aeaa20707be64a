#pragma once
// SamPredictor (segment_anything/predictor.py): embed an image once, then decode any number of
// prompts against that embedding.
#include <ATen/ATen.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "sam/sam.h"
#include "sam/transforms.h"

namespace ptq4sam::sam {

struct Point {
  double x = 0, y = 0;
  int label = 1;  // 1 foreground, 0 background
};

struct Box {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// One prompt: points and/or a box and/or a low-res mask (1 x 256 x 256 logits), in original
// image pixels.
struct Prompt {
  std::vector<Point> points;
  std::optional<Box> box;
  at::Tensor mask_input;
};

struct Prediction {
  at::Tensor masks;     // (B, C, H, W): logits at the original size, or bool when thresholded
  at::Tensor iou;       // (B, C)
  at::Tensor low_res;   // (B, C, 256, 256) logits
};

// Checks a box against an image of width x height: throws ptq4sam::Error (where: the prompt
// text) when it lies entirely outside or is inverted, and returns it clipped to the image.
Box clip_box(const Box& box, int64_t width, int64_t height, const std::string& where);
// Throws when the point lies outside [0, width] x [0, height].
void check_point(const Point& point, int64_t width, int64_t height, const std::string& where);

class Predictor {
 public:
  static constexpr int64_t kDecoderChunk = 16;

  explicit Predictor(std::shared_ptr<Sam> model);

  // image: H x W x 3 RGB uint8. Resizes, normalises, pads and runs the image encoder.
  void set_image(const at::Tensor& image);
  // Uses a precomputed input image (already resized, 3 x h x w uint8 or float) and original size.
  void set_torch_image(const at::Tensor& input_image, std::pair<int64_t, int64_t> original_size);

  // Decodes all prompts in one batch. They must share a structure (same number of points,
  // all or none with a box, all or none with a mask). Masks are upscaled to the original
  // size; thresholded at 0.0 unless return_logits.
  Prediction predict(const std::vector<Prompt>& prompts, bool multimask_output, bool return_logits = false) const;

  // SamPredictor.predict_torch: prompts already in the model's input frame (transform()
  // applied), batched: coords (B, N, 2) with labels (B, N), boxes (B, 4), masks (B, 1, 256,
  // 256), each undefined or of one batch size. Coordinates keep their dtype into the prompt
  // encoder, which normalises them in it before float32, as the official automatic mask
  // generator's float64 points are.
  Prediction predict_torch(const at::Tensor& coords, const at::Tensor& labels, const at::Tensor& boxes,
                           const at::Tensor& masks, bool multimask_output, bool return_logits = false) const;
  const ResizeLongestSide& transform() const { return transform_; }
  // predict_torch's two halves, for callers that upscale fewer masks at a time than they
  // decode: the decoder on one batch (low-res logits (B, C, 256, 256), IoU (B, C)), and
  // low-res logits to logits at the original image size (each mask on its own: the same
  // numbers in any batch).
  std::pair<at::Tensor, at::Tensor> decode(const at::Tensor& coords, const at::Tensor& labels, const at::Tensor& boxes,
                                           const at::Tensor& masks, bool multimask_output) const;
  at::Tensor upscale(const at::Tensor& low_res) const;

  // Uses a precomputed image embedding (1, C, E, E) of an image resized to input_size.
  void set_features(const at::Tensor& features, std::pair<int64_t, int64_t> input_size,
                    std::pair<int64_t, int64_t> original_size);

  // Forgets the image (SamPredictor.reset_image): predict throws again until the next one.
  void reset_image() {
    features_ = at::Tensor();
    image_side_ = std::make_shared<ImageSideCache>();
    original_size_ = input_size_ = {0, 0};
  }
  bool is_image_set() const { return features_.defined(); }
  const at::Tensor& features() const { return features_; }
  std::pair<int64_t, int64_t> original_size() const { return original_size_; }
  std::pair<int64_t, int64_t> input_size() const { return input_size_; }
  const Sam& model() const { return *model_; }
  // Prompts decoded per batch (default kDecoderChunk); 0 decodes all of an image's prompts in
  // one batch, as calibration needs (observers update once per image).
  void set_decoder_chunk(int64_t chunk) { decoder_chunk_ = chunk; }
  int64_t decoder_chunk() const { return decoder_chunk_; }

 private:
  // The decoder's work on the current image that every prompt without a mask input shares
  // (MaskDecoder::image_side), made by the first decode that may use it. A new image gets a
  // new cache, so copies of a predictor never see each other's.
  struct ImageSideCache {
    std::mutex mutex;
    std::shared_ptr<const SharedImageSide> side;
  };
  std::shared_ptr<const SharedImageSide> image_side(const at::Tensor& dense) const;

  std::shared_ptr<Sam> model_;
  std::shared_ptr<ImageSideCache> image_side_ = std::make_shared<ImageSideCache>();
  ResizeLongestSide transform_;
  at::Tensor features_;
  int64_t decoder_chunk_ = kDecoderChunk;
  std::pair<int64_t, int64_t> original_size_{0, 0}, input_size_{0, 0};
};

}  // namespace ptq4sam::sam
