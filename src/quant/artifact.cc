#include "quant/artifact.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include <functional>
#include <set>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "quant/integer_runtime.h"
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

namespace {

// One artifact file being read: its metadata checked, its tensors found by name, its weights'
// codes decoded. Every error names the file.
class ArtifactReader {
 public:
  explicit ArtifactReader(const std::string& path) : path_(path), file_(io::read_safetensors(path)) {
    if (meta("format") != kFormatName) fail("is not a ptq4sam artifact (format '" + meta("format") + "')");
    int version = 0;
    try {
      version = std::stoi(meta("format_version"));
    } catch (const std::exception&) {
      fail("has an unreadable format_version");
    }
    if (version > kArtifactFormatVersion)
      fail("has format version " + std::to_string(version) + ", newer than this tool's " +
           std::to_string(kArtifactFormatVersion) + " (written by ptq4sam " + meta("tool_version") + "); upgrade ptq4sam");
    weights_ = json_meta("quantized_weights");
    config_ = parse_quant_config(meta("config"), path + " (embedded config)");
  }

  const QuantConfig& config() const { return config_; }
  bool quant_encoder() const { return meta("quant_encoder") == "true"; }
  bool is_quantized_weight(const std::string& name) const { return weights_.contains(name); }

  std::string meta(const std::string& key) const {
    const auto it = file_.metadata.find(key);
    if (it == file_.metadata.end()) fail("is not a ptq4sam artifact (metadata has no '" + key + "')");
    return it->second;
  }

  json json_meta(const std::string& key) const {
    json value;
    try {
      value = json::parse(meta(key));
    } catch (const json::exception&) {
      fail("has corrupt " + key + " metadata (not JSON)");
    }
    if (!value.is_object()) fail("has corrupt " + key + " metadata (not a JSON object)");
    return value;
  }

  const at::Tensor& tensor(const std::string& name) const {
    const at::Tensor* t = file_.find(name);
    if (!t) fail("has no tensor '" + name + "'");
    return *t;
  }
  const at::Tensor* find(const std::string& name) const { return file_.find(name); }
  const std::vector<std::pair<std::string, at::Tensor>>& tensors() const { return file_.tensors; }

  // A quantized weight's metadata, checked: 2- to 8-bit codes, positive dimensions whose
  // product fits (a hostile shape must not overflow the element count).
  struct WeightInfo {
    std::vector<int64_t> shape;
    int64_t rows = 0, in_features = 1;
    QuantRange range;
    bool packed = false;
  };
  WeightInfo weight_info(const std::string& name) const {
    WeightInfo info{{}, 0, 1, QuantRange{8, config_.w.symmetric}, false};
    try {
      const auto& entry = weights_.at(name);
      info.shape = entry.at("shape").get<std::vector<int64_t>>();
      info.range.bit = entry.at("bit").get<int>();
      info.packed = entry.at("packed").get<bool>();
    } catch (const json::exception& e) {
      fail("has corrupt quantized_weights metadata for '" + name + "' (" + e.what() + ")");
    }
    if (info.range.bit < 2 || info.range.bit > 8)
      fail("weight '" + name + "' has " + std::to_string(info.range.bit) + "-bit codes (2 to 8 are supported)");
    if (info.shape.empty()) fail("weight '" + name + "' has no shape");
    for (const int64_t d : info.shape)
      if (d < 1 || d > (int64_t(1) << 31)) fail("weight '" + name + "' has a dimension out of range");
    info.rows = info.shape[0];
    for (size_t i = 1; i < info.shape.size(); ++i)
      if (__builtin_mul_overflow(info.in_features, info.shape[i], &info.in_features) ||
          info.in_features > (int64_t(1) << 40))
        fail("weight '" + name + "' has too many elements");
    return info;
  }

  // A quantized weight as stored: codes on its grid, per-row scale and zero point, bias.
  StoredWeight weight(const std::string& name) const {
    const WeightInfo info = weight_info(name);
    const at::Tensor& stored = tensor(name);
    const at::Tensor codes = info.packed ? unpack_int4(stored, info.in_features) : stored;
    if (codes.numel() != info.rows * info.in_features) fail("weight '" + name + "' has the wrong number of codes");
    const at::Tensor& scale = tensor(name + "_fake_quant.scale");
    const at::Tensor& zp = tensor(name + "_fake_quant.zero_point");
    if ((scale.numel() != info.rows && scale.numel() != 1) || zp.numel() != scale.numel())
      fail("weight '" + name + "' has misshapen scales");
    const at::Tensor* bias = find(name.substr(0, name.rfind(".weight")) + ".bias");
    return StoredWeight{codes.to(at::kInt).reshape({info.rows, info.in_features}) + int(info.range.quant_min()),
                        scale.to(at::kFloat).reshape({-1, 1}), zp.to(at::kInt).reshape({-1, 1}),
                        bias ? *bias : at::Tensor(), info.range.bit};
  }

  // Each activation quantizer's calibrated parameters, checked.
  void set_quantizer_params(QuantizedSam& qsam) const {
    for (const auto& quantizer : qsam.quantizers()) {
      const std::string& name = quantizer->name();
      if (const auto affine = std::dynamic_pointer_cast<AffineQuantizer>(quantizer)) {
        affine->set_params(tensor(name + ".scale"), tensor(name + ".zero_point"));
      } else if (const auto log = std::dynamic_pointer_cast<LogQuantizer>(quantizer)) {
        const at::Tensor &scale_t = tensor(name + ".scale"), &tau_t = tensor(name + ".tau");
        if (scale_t.numel() != 1 || tau_t.numel() != 1) fail("softmax quantizer '" + name + "' needs one scale and one tau");
        const double scale = scale_t.item<double>(), tau = tau_t.item<double>();
        if (!(std::isfinite(scale) && scale > 0 && std::isfinite(tau) && tau > 0))
          fail("softmax quantizer '" + name + "' has scale " + std::to_string(scale) + " and tau " + std::to_string(tau) +
               " (both must be positive and finite)");
        log->set_params(scale, tau);
      }
    }
  }

  // BIG's decision and folded signs at each site.
  void set_big_decisions(QuantizedSam& qsam) const {
    const json big = json_meta("big");
    for (auto& site : qsam.big_sites()) {
      const auto decision = big.find(site.name);
      if (decision != big.end() && !decision->is_boolean())
        fail("has corrupt big metadata ('" + site.name + "' is not true or false)");
      site.decision.bimodal = decision != big.end() && decision->get<bool>();
      if (const at::Tensor* sign = find(site.name + ".big_sign")) site.decision.sign = *sign;
    }
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw Error(path_, problem); }

  std::string path_;
  io::SafetensorsFile file_;
  json weights_;
  QuantConfig config_;
};

// Whether a stored tensor is one of the model's parameters (not a quantizer's or BIG's).
bool is_model_parameter(const std::string& name) {
  return name.find("_fake_quant") == std::string::npos && name.find("fake_quantize.") == std::string::npos &&
         name.find(".big_sign") == std::string::npos;
}

}  // namespace

std::unique_ptr<QuantizedSam> load_artifact(const std::string& path, const LoadOptions& options) {
  const ArtifactReader artifact(path);
  IntegerPlan plan(options.backend == Backend::kInteger, artifact.config(), options.integer_matmul_exact);
  io::StateDict state;
  state.set_source(path);
  for (const auto& [name, tensor] : artifact.tensors()) {
    if (!artifact.is_quantized_weight(name)) {
      if (is_model_parameter(name)) state.insert(name, tensor);
      continue;
    }
    const auto info = artifact.weight_info(name);
    if (plan.admit(name, info.in_features)) {
      // Its codes are read when its integer layer is made. Right shape, one element of
      // storage: only make_sam's shape checks see it.
      state.insert(name, at::zeros({1}).expand(info.shape));
      continue;
    }
    const StoredWeight w = artifact.weight(name);
    state.insert(name, ((w.codes - w.zero_point).to(at::kFloat) * w.scale).reshape(info.shape));
  }
  std::shared_ptr<sam::Sam> model;
  try {
    model = sam::make_sam(state);
  } catch (const Error& e) {
    throw Error(path, std::string("does not hold a whole SAM model: ") + e.what());
  }
  if (model_signature(*model) != artifact.meta("model_signature"))
    throw Error(path, "was written for a different model (tensor names or shapes differ)");
  auto qsam = std::make_unique<QuantizedSam>(model, artifact.config(), artifact.quant_encoder());
  artifact.set_quantizer_params(*qsam);
  artifact.set_big_decisions(*qsam);
  // Weights are stored dequantized-exact: quantizing them again changes nothing, but tells the
  // layers their grids (they then accumulate exactly, as the integer runtime does).
  qsam->set_mode(QuantMode::kSimulate);
  plan.attach(*qsam, [&](const std::string& key) { return artifact.weight(key); });
  return qsam;
}

}  // namespace ptq4sam::quant
