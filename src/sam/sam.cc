#include "sam/sam.h"

#include <set>
#include <sstream>

#include "util/error.h"

namespace ptq4sam::sam {
namespace {

const at::Tensor& require(const io::StateDict& state, const std::string& name, int64_t dim) {
  const at::Tensor& t = state.at(name);
  if (t.dim() != dim)
    throw Error(state.source(), "tensor '" + name + "' has " + std::to_string(t.dim()) + " dims, expected " +
                                    std::to_string(dim) + " (not a SAM checkpoint?)");
  // The config is read off these shapes and divided by some of them.
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) == 0) throw Error(state.source(), "tensor '" + name + "' has a dimension of size 0");
  return t;
}

int64_t count_indexed(const io::StateDict& state, const std::string& prefix, const std::string& suffix) {
  int64_t n = 0;
  while (state.contains(prefix + std::to_string(n) + suffix)) ++n;
  return n;
}

std::string list_keys(const std::vector<std::string>& keys) {
  std::string s;
  const size_t shown = std::min<size_t>(keys.size(), 8);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + keys[i];
  if (keys.size() > shown) s += ", ... (" + std::to_string(keys.size() - shown) + " more)";
  return s;
}

}  // namespace

std::string SamConfig::describe() const {
  std::ostringstream s;
  const auto& e = encoder;
  const char* name = e.embed_dim == 768 && e.depth == 12 ? "ViT-B" : e.embed_dim == 1024 && e.depth == 24 ? "ViT-L"
                   : e.embed_dim == 1280 && e.depth == 32 ? "ViT-H" : "ViT";
  s << name << " (embed " << e.embed_dim << ", depth " << e.depth << ", " << e.num_heads << " heads, window "
    << e.window_size << ", global";
  for (size_t i = 0; i < e.global_attn_indexes.size(); ++i) s << (i ? "," : " ") << e.global_attn_indexes[i];
  s << ")";
  return s.str();
}

SamConfig infer_config(const io::StateDict& state) {
  SamConfig c;
  auto& e = c.encoder;
  const at::Tensor& patch = require(state, "image_encoder.patch_embed.proj.weight", 4);
  e.embed_dim = patch.size(0);
  e.in_chans = patch.size(1);
  e.patch_size = patch.size(2);
  e.img_size = require(state, "image_encoder.pos_embed", 4).size(1) * e.patch_size;
  e.depth = count_indexed(state, "image_encoder.blocks.", ".norm1.weight");
  if (e.depth == 0) throw Error(state.source(), "no image_encoder.blocks (not a SAM checkpoint?)");
  e.mlp_dim = require(state, "image_encoder.blocks.0.mlp.lin1.weight", 2).size(0);
  e.out_chans = require(state, "image_encoder.neck.0.weight", 4).size(0);
  e.use_rel_pos = state.contains("image_encoder.blocks.0.attn.rel_pos_h");
  if (!e.use_rel_pos) throw Error(state.source(), "image encoder without relative positions is not supported");
  e.global_attn_indexes.clear();
  e.window_size = 0;
  const int64_t global_len = 2 * e.grid_size() - 1;
  for (int64_t i = 0; i < e.depth; ++i) {
    const at::Tensor& rel = require(state, "image_encoder.blocks." + std::to_string(i) + ".attn.rel_pos_h", 2);
    if (i == 0) e.num_heads = e.embed_dim / rel.size(1);
    if (rel.size(0) == global_len) {
      e.global_attn_indexes.push_back(i);
    } else {
      const int64_t window = (rel.size(0) + 1) / 2;
      if (e.window_size != 0 && e.window_size != window)
        throw Error(state.source(), "blocks use different window sizes");
      e.window_size = window;
    }
  }
  if (e.num_heads <= 0 || e.embed_dim % e.num_heads) throw Error(state.source(), "inconsistent attention head size");

  c.prompt_embed_dim = require(state, "prompt_encoder.no_mask_embed.weight", 2).size(1);
  c.mask_in_chans = require(state, "prompt_encoder.mask_downscaling.3.weight", 4).size(0);
  auto& d = c.decoder;
  d.transformer_dim = c.prompt_embed_dim;
  d.transformer_depth = count_indexed(state, "mask_decoder.transformer.layers.", ".norm1.weight");
  d.transformer_mlp_dim = require(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", 2).size(0);
  const int64_t internal = require(state, "mask_decoder.transformer.final_attn_token_to_image.q_proj.weight", 2).size(0);
  if (d.transformer_dim % internal != 0)
    throw Error(state.source(), "mask decoder attention width " + std::to_string(internal) + " does not divide " +
                                    std::to_string(d.transformer_dim));
  d.attention_downsample_rate = d.transformer_dim / internal;
  d.num_multimask_outputs = require(state, "mask_decoder.mask_tokens.weight", 2).size(0) - 1;
  d.iou_head_depth = count_indexed(state, "mask_decoder.iou_prediction_head.layers.", ".weight");
  d.iou_head_hidden_dim = require(state, "mask_decoder.iou_prediction_head.layers.0.weight", 2).size(0);
  return c;
}

Sam::Sam(const SamConfig& config_) : config(config_) {
  image_encoder = register_module("image_encoder", std::make_shared<ImageEncoderViT>(config.encoder));
  prompt_encoder = register_module(
      "prompt_encoder", std::make_shared<PromptEncoder>(config.prompt_embed_dim, config.image_embedding_size(),
                                                        config.encoder.img_size, config.mask_in_chans));
  mask_decoder = register_module("mask_decoder", std::make_shared<MaskDecoder>(config.decoder));
  pixel_mean = torch::tensor({123.675f, 116.28f, 103.53f}).view({3, 1, 1});
  pixel_std = torch::tensor({58.395f, 57.12f, 57.375f}).view({3, 1, 1});
}

std::vector<std::pair<std::string, at::Tensor>> Sam::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

void Sam::load_state_dict(io::StateDict& state) {
  const auto params = state_tensors();
  std::set<std::string> expected;
  std::vector<std::string> missing, misshapen, unexpected;
  for (const auto& [name, param] : params) {
    expected.insert(name);
    if (!state.contains(name)) {
      missing.push_back(name);
    } else if (state.at(name).sizes() != param.sizes()) {
      std::ostringstream s;
      s << name << " " << state.at(name).sizes() << " vs model " << param.sizes();
      misshapen.push_back(s.str());
    }
  }
  for (const auto& key : state.keys())
    if (!expected.count(key)) unexpected.push_back(key);
  std::string problems;
  if (!missing.empty()) problems += "missing keys: " + list_keys(missing);
  if (!unexpected.empty()) problems += std::string(problems.empty() ? "" : "; ") + "unexpected keys: " + list_keys(unexpected);
  if (!misshapen.empty()) problems += std::string(problems.empty() ? "" : "; ") + "wrong shapes: " + list_keys(misshapen);
  if (!problems.empty()) throw Error(state.source(), problems);

  torch::NoGradGuard no_grad;
  for (const auto& [name, param] : params) {
    at::Tensor value = state.take(name).to(at::kFloat);
    // A weight expanded from one element stands for one held in another form (the integer
    // runtime's codes): it stays a view of that element.
    const bool placeholder = value.numel() > 1 && value.storage().nbytes() <= size_t(value.element_size());
    if (!placeholder) value = value.contiguous();
    const_cast<at::Tensor&>(param).set_data(value);
  }
}

at::Tensor Sam::preprocess(const at::Tensor& image) const {
  const at::Tensor x = (image - pixel_mean) / pixel_std;
  const int64_t pad_h = config.encoder.img_size - x.size(2), pad_w = config.encoder.img_size - x.size(3);
  return at::constant_pad_nd(x, {0, pad_w, 0, pad_h});
}

at::Tensor Sam::postprocess_masks(const at::Tensor& masks, std::pair<int64_t, int64_t> input_size,
                                  std::pair<int64_t, int64_t> original_size) const {
  const int64_t s = config.encoder.img_size;
  at::Tensor m = at::upsample_bilinear2d(masks, {s, s}, false);
  m = m.narrow(2, 0, input_size.first).narrow(3, 0, input_size.second);
  return at::upsample_bilinear2d(m, {original_size.first, original_size.second}, false);
}

std::shared_ptr<Sam> load_sam(const std::string& checkpoint_path) {
  io::StateDict state = io::load_checkpoint(checkpoint_path);
  return make_sam(state);
}

std::shared_ptr<Sam> make_sam(io::StateDict& state) {
  const SamConfig config = infer_config(state);
  auto model = std::make_shared<Sam>(config);
  model->load_state_dict(state);
  model->eval();
  return model;
}

}  // namespace ptq4sam::sam
