#include "sam/random_weights.h"

#include <cmath>

namespace ptq4sam::sam {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

SamConfig vit_config(int64_t embed_dim, int64_t depth, int64_t num_heads, std::vector<int64_t> global_attn_indexes) {
  SamConfig c;
  c.encoder.embed_dim = embed_dim;
  c.encoder.depth = depth;
  c.encoder.num_heads = num_heads;
  c.encoder.mlp_dim = 4 * embed_dim;
  c.encoder.global_attn_indexes = std::move(global_attn_indexes);
  return c;
}

SamConfig vit_b_config() { return vit_config(768, 12, 12, {2, 5, 8, 11}); }
SamConfig vit_l_config() { return vit_config(1024, 24, 16, {5, 11, 17, 23}); }
SamConfig vit_h_config() { return vit_config(1280, 32, 16, {7, 15, 23, 31}); }

io::StateDict random_state_dict(const SamConfig& config, uint64_t seed) {
  const Sam shapes(config);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  io::StateDict state;
  for (const auto& [name, param] : shapes.state_tensors()) {
    at::Tensor t = at::empty(param.sizes(), at::kFloat);
    const bool is_norm = name.find("norm") != std::string::npos || name.find("neck.1") != std::string::npos ||
                         name.find("neck.3") != std::string::npos || name.find("mask_downscaling.1") != std::string::npos ||
                         name.find("mask_downscaling.4") != std::string::npos || name.find("output_upscaling.1") != std::string::npos;
    const bool is_embedding = name.find("prompt_encoder.point_embeddings") != std::string::npos ||
                              name.find("_embed.weight") != std::string::npos || ends_with(name, "_token.weight") ||
                              ends_with(name, "_tokens.weight");
    if (name.find("positional_encoding_gaussian_matrix") != std::string::npos) {
      t.normal_(0.0, 1.0, gen);
    } else if (is_norm && ends_with(name, ".weight")) {
      t.normal_(1.0, 0.1, gen);
    } else if (ends_with(name, ".bias") || name.find("rel_pos") != std::string::npos || ends_with(name, "pos_embed")) {
      t.normal_(0.0, 0.02, gen);
    } else if (t.dim() >= 2 && !is_embedding) {
      // ConvTranspose2d weights are (in, out, k, k): their fan-in is in * k * k / stride^2.
      const bool transposed = name.find("output_upscaling") != std::string::npos;
      const int64_t fan_in = transposed ? t.size(0) : t.numel() / t.size(0);
      t.normal_(0.0, 1.0 / std::sqrt(double(fan_in)), gen);
    } else {
      t.normal_(0.0, 1.0, gen);  // token and prompt embeddings
    }
    state.insert(name, t);
  }
  state.set_source("random SAM (seed " + std::to_string(seed) + ")");
  return state;
}

}  // namespace ptq4sam::sam
