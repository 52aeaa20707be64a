#pragma once
// Quantizers attached to a sam::Sam at exactly the seed's places (DESIGN.md, "Where
// quantizers sit"), named as the seed names them: "<layer>.layer_pre_act_fake_quantize",
// "<layer>.weight_fake_quant", and on attentions "{q,k,v,softmax}_post_act_fake_quantize".
#include <memory>
#include <string>
#include <vector>

#include "quant/qconfig.h"
#include "quant/quantizer.h"
#include "sam/sam.h"

namespace ptq4sam::quant {

// A token-to-image attention whose keys BIG inspects.
struct BigSite {
  std::string name;  // e.g. "mask_decoder.transformer.layers.0.cross_attn_token_to_image"
  std::shared_ptr<sam::Attention> attention;
  std::shared_ptr<AffineQuantizer> keys;
  BimodalDecision decision;
};

// A Linear or Conv2d with an input and a weight quantizer, e.g. "image_encoder.blocks.0.attn.qkv".
struct LayerSite {
  std::string name;
  sam::LayerQuantPoints* points;
};

class QuantizedSam {
 public:
  // Attaches the quantizers (encoder ones only with quant_encoder). With BIG, every decoder
  // attention's keys use the AvgMSEFast search; with AGQ every softmax output is AGQ's.
  QuantizedSam(std::shared_ptr<sam::Sam> model, QuantConfig config, bool quant_encoder);
  ~QuantizedSam();
  QuantizedSam(const QuantizedSam&) = delete;
  QuantizedSam& operator=(const QuantizedSam&) = delete;

  enum class Which { kAll, kActivations, kWeights };
  // Sets the mode of the chosen quantizers and turns the others off.
  void set_mode(QuantMode mode, Which which = Which::kAll);

  const std::shared_ptr<sam::Sam>& model() const { return model_; }
  const QuantConfig& config() const { return config_; }
  bool quant_encoder() const { return quant_encoder_; }
  const std::vector<std::shared_ptr<Quantizer>>& quantizers() const { return quantizers_; }
  std::shared_ptr<Quantizer> find(const std::string& name) const;  // nullptr when absent
  std::vector<BigSite>& big_sites() { return big_sites_; }
  const std::vector<BigSite>& big_sites() const { return big_sites_; }
  // Parameter names (state-dict keys) of the weights that have a weight quantizer.
  std::vector<std::string> quantized_weight_keys() const;
  const std::vector<LayerSite>& layer_sites() const { return layer_sites_; }

  // The layers the integer runtime runs on codes (quant/artifact.h), and those it had to leave
  // simulated, with the reason; and the attentions it runs on codes.
  struct IntegerLayers {
    std::vector<std::string> names, fallback, attentions;
    std::string fallback_reason;
  };
  IntegerLayers& integer_layers() { return integer_layers_; }
  const IntegerLayers& integer_layers() const { return integer_layers_; }

 private:
  void attach_linear(const std::string& name, sam::LayerQuantPoints& points);
  void attach_attention(const std::string& name, sam::AttentionQuantPoints& points, bool decoder);
  std::shared_ptr<AffineQuantizer> make_affine(const std::string& name, const QConfig& config);

  std::shared_ptr<sam::Sam> model_;
  QuantConfig config_;
  bool quant_encoder_;
  std::vector<std::shared_ptr<Quantizer>> quantizers_;
  std::vector<LayerSite> layer_sites_;
  std::vector<sam::AttentionQuantPoints*> attention_points_;
  std::vector<BigSite> big_sites_;
  IntegerLayers integer_layers_;
};

}  // namespace ptq4sam::quant
