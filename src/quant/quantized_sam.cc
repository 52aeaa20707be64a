#include "quant/quantized_sam.h"

#include "util/error.h"

namespace ptq4sam::quant {
namespace {

bool is_lsq(const QConfig& config) { return config.quantizer.rfind("LSQ", 0) == 0; }

// The image encoder's position embedding is the largest tensor the seed leaves in float32, a
// fifth of a W4A4 ViT-B's weights (12.6 of 65 MB). The quantized model holds it rounded to
// float16 values, so calibration, the simulated model and the integer runtime see the same
// numbers while artifacts store it, and the integer runtime holds it, in half the bytes. The
// rounding is at most 2^-11 relative, far below an activation quantizer's step; but any
// perturbation flips some codes at rounding boundaries and grows block by block, so it is made
// here, for every backend, and not in the integer runtime alone.
void round_position_embedding_to_half(sam::Sam& model) {
  at::NoGradGuard no_grad;
  at::Tensor& pos_embed = model.image_encoder->pos_embed;
  pos_embed.copy_(pos_embed.to(at::kHalf));
}

}  // namespace

QuantizedSam::QuantizedSam(std::shared_ptr<sam::Sam> model, QuantConfig config, bool quant_encoder)
    : model_(std::move(model)), config_(std::move(config)), quant_encoder_(quant_encoder) {
  round_position_embedding_to_half(*model_);
  if (quant_encoder_) {
    const auto& encoder = *model_->image_encoder;
    for (size_t i = 0; i < encoder.blocks.size(); ++i) {
      const auto& block = *encoder.blocks[i];
      const std::string prefix = "image_encoder.blocks." + std::to_string(i);
      attach_linear(prefix + ".attn.qkv", block.attn->qkv->quant);
      attach_linear(prefix + ".attn.proj", block.attn->proj->quant);
      attach_attention(prefix + ".attn", block.attn->quant, false);
      attach_linear(prefix + ".mlp.lin1", block.mlp->lin1->quant);
      attach_linear(prefix + ".mlp.lin2", block.mlp->lin2->quant);
    }
    attach_linear("image_encoder.neck.0", encoder.neck_conv1->quant);
    attach_linear("image_encoder.neck.2", encoder.neck_conv2->quant);
  }
  const auto& transformer = *model_->mask_decoder->transformer;
  const auto attach_decoder_attention = [&](const std::string& name, const std::shared_ptr<sam::Attention>& attn) {
    attach_linear(name + ".q_proj", attn->q_proj->quant);
    attach_linear(name + ".k_proj", attn->k_proj->quant);
    attach_linear(name + ".v_proj", attn->v_proj->quant);
    attach_linear(name + ".out_proj", attn->out_proj->quant);
    attach_attention(name, attn->quant, true);
    if (config_.ptq4sam.big && name.find("token_to_image") != std::string::npos)
      big_sites_.push_back({name, attn, std::static_pointer_cast<AffineQuantizer>(find(name + ".k_post_act_fake_quantize")), {}});
  };
  for (size_t i = 0; i < transformer.layers.size(); ++i) {
    const auto& layer = *transformer.layers[i];
    const std::string prefix = "mask_decoder.transformer.layers." + std::to_string(i);
    attach_decoder_attention(prefix + ".self_attn", layer.self_attn);
    attach_decoder_attention(prefix + ".cross_attn_token_to_image", layer.cross_attn_token_to_image);
    attach_linear(prefix + ".mlp.lin1", layer.mlp->lin1->quant);
    attach_linear(prefix + ".mlp.lin2", layer.mlp->lin2->quant);
    attach_decoder_attention(prefix + ".cross_attn_image_to_token", layer.cross_attn_image_to_token);
  }
  attach_decoder_attention("mask_decoder.transformer.final_attn_token_to_image", transformer.final_attn_token_to_image);
}

QuantizedSam::~QuantizedSam() {
  // The model may outlive this object: leave it FP32.
  for (auto& site : layer_sites_) *site.points = {};
  for (auto* points : attention_points_) *points = {};
}

std::shared_ptr<AffineQuantizer> QuantizedSam::make_affine(const std::string& name, const QConfig& config) {
  auto q = std::make_shared<AffineQuantizer>(name, config.range(), config.ch_axis, make_observer(config), is_lsq(config));
  quantizers_.push_back(q);
  return q;
}

void QuantizedSam::attach_linear(const std::string& name, sam::LayerQuantPoints& points) {
  points.input = make_affine(name + ".layer_pre_act_fake_quantize", config_.a);
  points.weight = make_affine(name + ".weight_fake_quant", config_.w);
  layer_sites_.push_back({name, &points});
}

void QuantizedSam::attach_attention(const std::string& name, sam::AttentionQuantPoints& points, bool decoder) {
  points.q = make_affine(name + ".q_post_act_fake_quantize", config_.a);
  if (decoder && config_.ptq4sam.big) {
    // The seed's LSQSignFakeQuantize with the sign-aware AvgMSEFast observer (its sign is
    // never set, so the search is a plain AvgMSEFast one).
    QConfig keys = config_.a;
    keys.quantizer = "LSQSignFakeQuantize";
    keys.observer = "SignAvgMSEFastObserver";
    points.k = make_affine(name + ".k_post_act_fake_quantize", keys);
  } else {
    points.k = make_affine(name + ".k_post_act_fake_quantize", config_.a);
  }
  points.v = make_affine(name + ".v_post_act_fake_quantize", config_.a);
  const std::string softmax = name + ".softmax_post_act_fake_quantize";
  if (config_.ptq4sam.agq) {
    auto q = std::make_shared<LogQuantizer>(softmax, config_.a.range());
    quantizers_.push_back(q);
    points.softmax = q;
  } else {
    points.softmax = make_affine(softmax, config_.a);
  }
  attention_points_.push_back(&points);
}

void QuantizedSam::set_mode(QuantMode mode, Which which) {
  for (const auto& q : quantizers_) {
    const bool chosen = which == Which::kAll || (which == Which::kWeights) == q->is_weight();
    q->set_mode(chosen ? mode : QuantMode::kOff);
  }
}

std::shared_ptr<Quantizer> QuantizedSam::find(const std::string& name) const {
  for (const auto& q : quantizers_)
    if (q->name() == name) return q;
  return nullptr;
}

std::vector<std::string> QuantizedSam::quantized_weight_keys() const {
  std::vector<std::string> keys;
  for (const auto& q : quantizers_)
    if (q->is_weight()) keys.push_back(q->weight_key());
  return keys;
}

}  // namespace ptq4sam::quant
