#include "quant/artifact.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include <functional>
#include <numeric>
#include <set>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace ptq4sam::quant {
namespace {

using nlohmann::json;

constexpr const char* kFormatName = "ptq4sam.quantized";

// Names and shapes of every model tensor, in order: two artifacts for different models differ.
std::string model_signature(const sam::Sam& model) {
  std::string text;
  for (const auto& [name, tensor] : model.state_tensors()) {
    text += name + ":";
    for (const int64_t d : tensor.sizes()) text += std::to_string(d) + ",";
    text += ";";
  }
  return std::to_string(std::hash<std::string>{}(text));
}

// Weights as (out, rest): the channel axis of every quantized weight is 0.
at::Tensor as_rows(const at::Tensor& w) { return w.reshape({w.size(0), -1}); }

constexpr const char* kPositionEmbedding = "image_encoder.pos_embed";

// A quantized model's position embedding holds float16 values (see QuantizedSam): stored as
// such, and held as such by the integer runtime, which adds it in float32.
void hold_position_embedding_in_half(sam::Sam& model) {
  at::Tensor& pos_embed = model.image_encoder->pos_embed;
  pos_embed.set_data(pos_embed.to(at::kHalf));
}

}  // namespace

at::Tensor pack_int4(const at::Tensor& codes) {
  at::Tensor c = codes.to(at::kByte);
  const int64_t last = c.size(-1);
  if (last % 2) c = at::constant_pad_nd(c, {0, 1});
  const at::Tensor pairs = c.reshape({-1, 2});
  const at::Tensor packed = pairs.select(1, 0).bitwise_or(pairs.select(1, 1).bitwise_left_shift(4));
  std::vector<int64_t> shape = c.sizes().vec();
  shape.back() /= 2;
  return packed.reshape(shape);
}

at::Tensor unpack_int4(const at::Tensor& packed, int64_t last_dim) {
  const at::Tensor low = packed.bitwise_and(0x0f), high = packed.bitwise_right_shift(4);
  at::Tensor both = at::stack({low, high}, -1);
  std::vector<int64_t> shape = packed.sizes().vec();
  shape.back() *= 2;
  return both.reshape(shape).narrow(-1, 0, last_dim);
}

bool is_artifact(const std::string& path) { return io::looks_like_safetensors(path); }

void save_artifact(const QuantizedSam& qsam, const std::string& path) {
  if (!qsam.integer_layers().names.empty())
    throw Error(path, "not written: a model loaded for the integer runtime has no float weights to save");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto weight_keys = qsam.quantized_weight_keys();
  const std::set<std::string> quantized(weight_keys.begin(), weight_keys.end());
  json weights = json::object();
  for (const auto& [name, tensor] : qsam.model()->state_tensors()) {
    if (!quantized.count(name)) {
      tensors.emplace_back(name, tensor.to(name == kPositionEmbedding ? at::kHalf : at::kFloat));
      continue;
    }
    const auto q = std::static_pointer_cast<AffineQuantizer>(qsam.find(name + "_fake_quant"));
    const int64_t offset = q->range().quant_min();
    const at::Tensor codes = as_rows(q->quantize_codes(tensor) - offset);
    const bool packed = q->range().bit <= 4;
    tensors.emplace_back(name, packed ? pack_int4(codes) : codes.to(at::kByte));
    weights[name] = {{"shape", tensor.sizes().vec()}, {"bit", q->range().bit}, {"packed", packed}};
  }
  json big = json::object();
  for (const auto& site : qsam.big_sites()) {
    big[site.name] = site.decision.bimodal;
    if (site.decision.bimodal) tensors.emplace_back(site.name + ".big_sign", site.decision.sign.to(at::kFloat));
  }
  for (const auto& quantizer : qsam.quantizers()) {
    if (!quantizer->ready()) throw Error(quantizer->name(), "is not calibrated; nothing to save");
    if (const auto affine = std::dynamic_pointer_cast<AffineQuantizer>(quantizer)) {
      tensors.emplace_back(quantizer->name() + ".scale", affine->scale());
      tensors.emplace_back(quantizer->name() + ".zero_point", affine->zero_point());
    } else if (const auto log = std::dynamic_pointer_cast<LogQuantizer>(quantizer)) {
      tensors.emplace_back(quantizer->name() + ".scale", at::full({1}, log->scale(), at::kFloat));
      tensors.emplace_back(quantizer->name() + ".tau", at::full({1}, log->tau(), at::kFloat));
    }
  }
  const std::map<std::string, std::string> metadata = {
      {"format", kFormatName},
      {"format_version", std::to_string(kArtifactFormatVersion)},
      {"tool_version", PTQ4SAM_VERSION},
      {"config", qsam.config().source},
      {"quant_encoder", qsam.quant_encoder() ? "true" : "false"},
      {"quantized_weights", weights.dump()},
      {"big", big.dump()},
      {"model_signature", model_signature(*qsam.model())},
  };
  io::write_safetensors(path, tensors, metadata);
}

std::unique_ptr<QuantizedSam> load_artifact(const std::string& path, const LoadOptions& options) {
  const io::SafetensorsFile file = io::read_safetensors(path);
  const auto meta = [&](const std::string& key) {
    const auto it = file.metadata.find(key);
    if (it == file.metadata.end()) throw Error(path, "is not a ptq4sam artifact (metadata has no '" + key + "')");
    return it->second;
  };
  if (meta("format") != kFormatName) throw Error(path, "is not a ptq4sam artifact (format '" + meta("format") + "')");
  int version = 0;
  try {
    version = std::stoi(meta("format_version"));
  } catch (const std::exception&) {
    throw Error(path, "has an unreadable format_version");
  }
  if (version > kArtifactFormatVersion)
    throw Error(path, "has format version " + std::to_string(version) + ", newer than this tool's " +
                          std::to_string(kArtifactFormatVersion) + " (written by ptq4sam " + meta("tool_version") +
                          "); upgrade ptq4sam");
  json weights;
  try {
    weights = json::parse(meta("quantized_weights"));
  } catch (const json::exception&) {
    throw Error(path, "has corrupt quantized_weights metadata");
  }
  const QuantConfig config = parse_quant_config(meta("config"), path + " (embedded config)");
  const bool quant_encoder = meta("quant_encoder") == "true";

  io::StateDict state;
  state.set_source(path);
  const auto scale_of = [&](const std::string& name) -> const at::Tensor& {
    const at::Tensor* t = file.find(name);
    if (!t) throw Error(path, "has no tensor '" + name + "'");
    return *t;
  };
  // A quantized weight's codes as (out, rest) on its grid, and its shape.
  const auto codes_of = [&](const std::string& name, const at::Tensor& stored) {
    std::vector<int64_t> shape;
    QuantRange range{8, config.w.symmetric};
    bool packed = false;
    try {
      const auto& info = weights.at(name);
      shape = info.at("shape").get<std::vector<int64_t>>();
      range.bit = info.at("bit").get<int>();
      packed = info.at("packed").get<bool>();
    } catch (const json::exception& e) {
      throw Error(path, "has corrupt quantized_weights metadata for '" + name + "' (" + e.what() + ")");
    }
    if (range.bit < 2 || range.bit > 8)
      throw Error(path, "weight '" + name + "' has " + std::to_string(range.bit) + "-bit codes (2 to 8 are supported)");
    for (const int64_t d : shape)
      if (d < 1) throw Error(path, "weight '" + name + "' has a non-positive dimension");
    int64_t rest = 1;
    for (size_t i = 1; i < shape.size(); ++i) rest *= shape[i];
    const at::Tensor codes = packed ? unpack_int4(stored, rest) : stored;
    if (shape.empty() || codes.numel() != shape[0] * rest)
      throw Error(path, "weight '" + name + "' has the wrong number of codes");
    return std::make_pair(codes.to(at::kInt).reshape({shape[0], rest}) + int(range.quant_min()), shape);
  };
  const auto channel_params = [&](const std::string& name, int64_t channels) {
    const at::Tensor& scale = scale_of(name + "_fake_quant.scale");
    const at::Tensor& zp = scale_of(name + "_fake_quant.zero_point");
    if ((scale.numel() != channels && scale.numel() != 1) || zp.numel() != scale.numel())
      throw Error(path, "weight '" + name + "' has misshapen scales");
    return std::make_pair(scale.to(at::kFloat).reshape({-1, 1}), zp.to(at::kInt).reshape({-1, 1}));
  };
  const bool integer = options.backend == Backend::kInteger;
  const bool per_tensor_inputs = config.a.ch_axis < 0 && config.a.bit <= 8;
  std::set<std::string> integer_weights;  // run on codes: their float weights are never made
  std::vector<std::string> fallback;
  for (const auto& [name, tensor] : file.tensors) {
    if (!weights.contains(name)) continue;
    if (integer) {
      // The codes are read when the integer layer is made, below.
      const std::vector<int64_t> shape = weights[name].at("shape").get<std::vector<int64_t>>();
      const int64_t in_features =
          shape.empty() ? 0 : std::accumulate(shape.begin() + 1, shape.end(), int64_t(1), std::multiplies<>());
      if (options.integer_matmul_exact && per_tensor_inputs && in_features <= (int64_t(1) << 15)) {
        integer_weights.insert(name);
        // Right shape, one element of storage: only make_sam's shape checks see it.
        state.insert(name, at::zeros({1}).expand(shape));
        continue;
      }
      fallback.push_back(name.substr(0, name.rfind(".weight")));
    }
    const auto [codes, shape] = codes_of(name, tensor);
    const auto [scale, zp] = channel_params(name, shape[0]);
    state.insert(name, ((codes - zp).to(at::kFloat) * scale).reshape(shape));
  }
  std::set<std::string> quantizer_tensors;
  for (const auto& [name, tensor] : file.tensors) {
    if (weights.contains(name)) continue;
    const bool is_param = name.find("_fake_quant") == std::string::npos && name.find("fake_quantize.") == std::string::npos &&
                          name.find(".big_sign") == std::string::npos;
    if (is_param) state.insert(name, tensor);
  }
  std::shared_ptr<sam::Sam> model;
  try {
    model = sam::make_sam(state);
  } catch (const Error& e) {
    throw Error(path, std::string("does not hold a whole SAM model: ") + e.what());
  }
  if (model_signature(*model) != meta("model_signature"))
    throw Error(path, "was written for a different model (tensor names or shapes differ)");
  auto qsam = std::make_unique<QuantizedSam>(model, config, quant_encoder);
  for (const auto& quantizer : qsam->quantizers()) {
    const std::string& name = quantizer->name();
    if (const auto affine = std::dynamic_pointer_cast<AffineQuantizer>(quantizer)) {
      affine->set_params(scale_of(name + ".scale"), scale_of(name + ".zero_point"));
    } else if (const auto log = std::dynamic_pointer_cast<LogQuantizer>(quantizer)) {
      const at::Tensor& scale_t = scale_of(name + ".scale");
      const at::Tensor& tau_t = scale_of(name + ".tau");
      if (scale_t.numel() != 1 || tau_t.numel() != 1)
        throw Error(path, "softmax quantizer '" + name + "' needs one scale and one tau");
      const double scale = scale_t.item<double>(), tau = tau_t.item<double>();
      if (!(std::isfinite(scale) && scale > 0 && std::isfinite(tau) && tau > 0))
        throw Error(path, "softmax quantizer '" + name + "' has scale " + std::to_string(scale) + " and tau " +
                              std::to_string(tau) + " (both must be positive and finite)");
      log->set_params(scale, tau);
    }
  }
  json big;
  try {
    big = json::parse(meta("big"));
  } catch (const json::exception&) {
    throw Error(path, "has corrupt big metadata (not JSON)");
  }
  if (!big.is_object()) throw Error(path, "has corrupt big metadata (not a JSON object)");
  for (auto& site : qsam->big_sites()) {
    const auto decision = big.find(site.name);
    if (decision != big.end() && !decision->is_boolean())
      throw Error(path, "has corrupt big metadata ('" + site.name + "' is not true or false)");
    site.decision.bimodal = decision != big.end() && decision->get<bool>();
    if (const at::Tensor* sign = file.find(site.name + ".big_sign")) site.decision.sign = *sign;
  }
  // Weights are stored dequantized-exact: quantizing them again changes nothing, but tells the
  // layers their grids (they then accumulate exactly, as the integer runtime does).
  qsam->set_mode(QuantMode::kSimulate);
  auto& runtime = qsam->integer_layers();
  const auto activation_of = [&](const std::string& quantizer) {
    const auto affine = std::static_pointer_cast<AffineQuantizer>(qsam->find(quantizer));
    const QuantRange a = affine->range();
    return kernels::ActivationQuantization{affine->scale()[0].item<float>(), affine->zero_point()[0].item<int32_t>(),
                                           int32_t(a.quant_min()), int32_t(a.quant_max())};
  };
  for (const auto& site : qsam->layer_sites()) {
    const std::string key = site.name + ".weight";
    if (!integer_weights.count(key)) continue;
    const kernels::ActivationQuantization activation = activation_of(site.name + ".layer_pre_act_fake_quantize");
    const auto [codes, shape] = codes_of(key, *file.find(key));
    const auto [scale, zp] = channel_params(key, shape[0]);
    const at::Tensor* bias = file.find(site.name + ".bias");
    auto layer = std::make_shared<kernels::IntegerLinear>();
    layer->input = activation;
    layer->weight = kernels::make_quantized_weight(codes, scale, zp, weights[key].at("bit").get<int>(), config.w.symmetric,
                                                   bias ? *bias : at::Tensor());
    site.points->integer = std::move(layer);
    runtime.names.push_back(site.name);
  }
  // The image encoder's attentions run on codes in both backends: their exact integer sums and
  // exponential are then the simulated numbers too, which the integer runtime must match bit for
  // bit (a one-ulp difference in a probability flips a code now and then, and in a random-weight
  // model such flips grow block by block to whole quantization steps).
  if (per_tensor_inputs && quant_encoder) {
    const auto& blocks = model->image_encoder->blocks;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const std::string name = "image_encoder.blocks." + std::to_string(i) + ".attn";
      auto attention = std::make_shared<kernels::IntegerAttention>();
      attention->q = activation_of(name + ".q_post_act_fake_quantize");
      attention->k = activation_of(name + ".k_post_act_fake_quantize");
      attention->v = activation_of(name + ".v_post_act_fake_quantize");
      const std::string softmax = name + ".softmax_post_act_fake_quantize";
      if (const auto log = std::dynamic_pointer_cast<LogQuantizer>(qsam->find(softmax))) {
        auto grid = std::make_shared<kernels::LogProbabilities>();
        grid->scale = log->scale();
        grid->tau = log->tau();
        grid->levels = int32_t(log->range().quant_max() - log->range().quant_min() + 1);
        grid->codes = [table = log->table()](const float* in, int32_t* codes, int64_t n) { table->codes(in, codes, n); };
        grid->values = log->table()->values();
        attention->log_probs = std::move(grid);
      } else {
        attention->probs = activation_of(softmax);
      }
      blocks[i]->attn->quant.integer = std::move(attention);
      runtime.attentions.push_back(name);
    }
  }
  if (integer) hold_position_embedding_in_half(*model);
  runtime.fallback = fallback;
  if (!fallback.empty())
    runtime.fallback_reason = !options.integer_matmul_exact
                                  ? "this CPU has no VNNI, where oneDNN's u8 x s8 product can saturate"
                                  : "their input quantizers are not per-tensor 8-bit ones";
  return qsam;
}

}  // namespace ptq4sam::quant
