#pragma once
// The Segment Anything model (segment_anything/modeling/sam.py) and its construction from an
// official checkpoint.
#include <torch/torch.h>

#include <string>

#include "io/checkpoint.h"
#include "sam/image_encoder.h"
#include "sam/mask_decoder.h"
#include "sam/prompt_encoder.h"

namespace ptq4sam::sam {

struct SamConfig {
  ImageEncoderConfig encoder;
  int64_t prompt_embed_dim = 256;
  int64_t mask_in_chans = 16;
  MaskDecoderConfig decoder;
  int64_t image_embedding_size() const { return encoder.grid_size(); }
  std::string describe() const;  // e.g. "ViT-B (embed 768, depth 12, 12 heads, global 2,5,8,11)"
};

// Infers the architecture from tensor shapes (ViT-B/L/H or any other size). Throws
// ptq4sam::Error naming the checkpoint when a tensor the inference needs is missing or odd.
SamConfig infer_config(const io::StateDict& state);

class Sam : public torch::nn::Module {
 public:
  explicit Sam(const SamConfig& config);

  // Moves the checkpoint's tensors into the model (as float32). Throws ptq4sam::Error listing
  // every missing, unexpected or misshapen key.
  void load_state_dict(io::StateDict& state);

  // Parameters and buffers by name: the keys of the official state_dict.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;

  // (B, 3, h, w) RGB float image -> normalised and zero-padded to img_size x img_size.
  at::Tensor preprocess(const at::Tensor& image) const;
  // Low-res logits (B, C, 4E, 4E) -> logits at original_size, via the padded input frame.
  at::Tensor postprocess_masks(const at::Tensor& masks, std::pair<int64_t, int64_t> input_size,
                               std::pair<int64_t, int64_t> original_size) const;

  static constexpr float kMaskThreshold = 0.0f;
  SamConfig config;
  std::shared_ptr<ImageEncoderViT> image_encoder;
  std::shared_ptr<PromptEncoder> prompt_encoder;
  std::shared_ptr<MaskDecoder> mask_decoder;
  at::Tensor pixel_mean, pixel_std;  // (3, 1, 1), not part of the checkpoint
};

// Reads an official checkpoint and builds the model it describes.
std::shared_ptr<Sam> load_sam(const std::string& checkpoint_path);
// A model of the configuration the tensors' shapes imply, taking them from `state`.
std::shared_ptr<Sam> make_sam(io::StateDict& state);

}  // namespace ptq4sam::sam
