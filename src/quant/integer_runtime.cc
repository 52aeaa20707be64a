#include "quant/integer_runtime.h"

namespace ptq4sam::quant {
namespace {

kernels::ActivationQuantization activation_of(const QuantizedSam& qsam, const std::string& quantizer) {
  const auto affine = std::static_pointer_cast<AffineQuantizer>(qsam.find(quantizer));
  const QuantRange range = affine->range();
  return kernels::ActivationQuantization{affine->scale()[0].item<float>(), affine->zero_point()[0].item<int32_t>(),
                                         int32_t(range.quant_min()), int32_t(range.quant_max())};
}

std::shared_ptr<const kernels::LogProbabilities> log_probabilities(const LogQuantizer& log) {
  auto grid = std::make_shared<kernels::LogProbabilities>();
  grid->scale = log.scale();
  grid->tau = log.tau();
  grid->levels = int32_t(log.range().quant_max() - log.range().quant_min() + 1);
  grid->codes = [table = log.table()](const float* in, int32_t* codes, int64_t n) { table->codes(in, codes, n); };
  grid->values = log.table()->values();
  return grid;
}

std::shared_ptr<const kernels::IntegerAttention> integer_attention(const QuantizedSam& qsam, const std::string& name) {
  auto attention = std::make_shared<kernels::IntegerAttention>();
  attention->q = activation_of(qsam, name + ".q_post_act_fake_quantize");
  attention->k = activation_of(qsam, name + ".k_post_act_fake_quantize");
  attention->v = activation_of(qsam, name + ".v_post_act_fake_quantize");
  const std::string softmax = name + ".softmax_post_act_fake_quantize";
  if (const auto log = std::dynamic_pointer_cast<LogQuantizer>(qsam.find(softmax)))
    attention->log_probs = log_probabilities(*log);
  else
    attention->probs = activation_of(qsam, softmax);
  return attention;
}

}  // namespace

IntegerPlan::IntegerPlan(bool integer_backend, const QuantConfig& config, bool integer_matmul_exact)
    : integer_backend_(integer_backend),
      integer_matmul_exact_(integer_matmul_exact),
      per_tensor_inputs_(config.a.ch_axis < 0 && config.a.bit <= 8),
      symmetric_weights_(config.w.symmetric) {}

bool IntegerPlan::admit(const std::string& key, int64_t in_features) {
  if (!integer_backend_) return false;
  if (integer_matmul_exact_ && per_tensor_inputs_ && in_features <= (int64_t(1) << 15)) {
    on_codes_.insert(key);
    return true;
  }
  fallback_.push_back(key.substr(0, key.rfind(".weight")));
  return false;
}

void IntegerPlan::attach(QuantizedSam& qsam, const WeightReader& read) const {
  auto& runtime = qsam.integer_layers();
  for (const auto& site : qsam.layer_sites()) {
    const std::string key = site.name + ".weight";
    if (!on_codes_.count(key)) continue;
    const StoredWeight stored = read(key);
    auto layer = std::make_shared<kernels::IntegerLinear>();
    layer->input = activation_of(qsam, site.name + ".layer_pre_act_fake_quantize");
    layer->weight = kernels::make_quantized_weight(stored.codes, stored.scale, stored.zero_point, stored.bit,
                                                   symmetric_weights_, stored.bias);
    site.points->integer = std::move(layer);
    runtime.names.push_back(site.name);
  }
  if (per_tensor_inputs_ && qsam.quant_encoder()) {
    const auto& blocks = qsam.model()->image_encoder->blocks;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const std::string name = "image_encoder.blocks." + std::to_string(i) + ".attn";
      blocks[i]->attn->quant.integer = integer_attention(qsam, name);
      runtime.attentions.push_back(name);
    }
  }
  if (integer_backend_) {
    at::Tensor& pos_embed = qsam.model()->image_encoder->pos_embed;
    pos_embed.set_data(pos_embed.to(at::kHalf));
  }
  runtime.fallback = fallback_;
  if (!fallback_.empty())
    runtime.fallback_reason = !integer_matmul_exact_ ? "this CPU has no VNNI, where oneDNN's u8 x s8 product can saturate"
                                                     : "their input quantizers are not per-tensor 8-bit ones";
}

}  // namespace ptq4sam::quant
