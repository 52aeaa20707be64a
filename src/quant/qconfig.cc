#include "quant/qconfig.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "util/error.h"

namespace ptq4sam::quant {
namespace {

const std::vector<std::string> kQuantizers = {"FixedFakeQuantize", "LSQFakeQuantize", "LSQPlusFakeQuantize",
                                              "LSQSignFakeQuantize", "AdaRoundFakeQuantize"};
const std::vector<std::string> kObservers = {"MinMaxObserver",     "AvgMinMaxObserver",  "MSEObserver",
                                             "AvgMSEObserver",     "MSEFastObserver",    "AvgMSEFastObserver",
                                             "SignAvgMSEFastObserver", "PCTObserver"};

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Reads one mapping, rejecting keys it does not know.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, std::string where)
      : node_(node), path_(std::move(path)), where_(std::move(where)) {
    if (!node_.IsMap()) fail(path_.empty() ? "the config must be a mapping" : "must be a mapping");
  }
  template <typename T>
  void read(const std::string& key, T& out) {
    known_.insert(key);
    const YAML::Node value = node_[key];
    if (!value) return;
    try {
      out = value.as<T>();
    } catch (const YAML::Exception&) {
      fail_key(key, "has a value of the wrong type");
    }
  }
  bool has(const std::string& key) {
    known_.insert(key);
    return bool(node_[key]);
  }
  YAML::Node child(const std::string& key) { return node_[key]; }
  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  void reject_unknown() const {
    for (const auto& item : node_) {
      if (!item.first.IsScalar()) fail("has a key that is not a name");
      const std::string key = item.first.as<std::string>();
      if (!known_.count(key)) fail_key(key, "is not a known key");
    }
  }
  [[noreturn]] void fail_key(const std::string& key, const std::string& problem) const {
    throw Error(where_, "key '" + key_path(key) + "' " + problem);
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(where_, path_.empty() ? problem : "key '" + path_ + "' " + problem);
  }
  YAML::Node node_;
  std::string path_, where_;
  std::set<std::string> known_;
};

QConfig read_qconfig(Section& parent, const std::string& key, QConfig config, const std::string& where, bool weights) {
  if (!parent.has(key)) return config;
  Section s(parent.child(key), parent.key_path(key), where);
  s.read("quantizer", config.quantizer);
  s.read("observer", config.observer);
  s.read("bit", config.bit);
  s.read("symmetric", config.symmetric);
  s.read("ch_axis", config.ch_axis);
  s.reject_unknown();
  if (std::find(kQuantizers.begin(), kQuantizers.end(), config.quantizer) == kQuantizers.end())
    s.fail_key("quantizer", "names an unknown quantizer '" + config.quantizer + "' (known: " + join(kQuantizers) + ")");
  if (std::find(kObservers.begin(), kObservers.end(), config.observer) == kObservers.end())
    s.fail_key("observer", "names an unknown observer '" + config.observer + "' (known: " + join(kObservers) + ")");
  if (config.bit < 2 || config.bit > 8) s.fail_key("bit", "must be between 2 and 8, not " + std::to_string(config.bit));
  if (weights ? (config.ch_axis != -1 && config.ch_axis != 0) : config.ch_axis != -1)
    s.fail_key("ch_axis", weights ? "must be 0 (per output channel) or -1 (per tensor)" : "must be -1 (activations are per tensor)");
  const bool per_tensor_only = config.observer.find("Avg") != std::string::npos ||
                               config.observer.find("Fast") != std::string::npos || config.observer == "PCTObserver";
  if (per_tensor_only && config.ch_axis != -1)
    s.fail_key("observer", config.observer + " works per tensor only (ch_axis -1)");
  if (!weights && config.quantizer == "AdaRoundFakeQuantize")
    s.fail_key("quantizer", "AdaRoundFakeQuantize is for weights only");
  return config;
}

}  // namespace

QuantConfig parse_quant_config(const std::string& yaml_text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(where, "is not valid YAML (line " + std::to_string(e.mark.line + 1) + ": " + e.msg + ")");
  }
  QuantConfig config;
  config.source = yaml_text;
  Section top(root, "", where);
  config.a = read_qconfig(top, "a_qconfig", config.a, where, false);
  config.w = read_qconfig(top, "w_qconfig", config.w, where, true);
  top.read("calibrate", config.calibrate);
  if (config.calibrate < 1) top.fail_key("calibrate", "must be at least 1");
  if (top.has("recon")) {
    ReconConfig recon;
    Section s(top.child("recon"), "recon", where);
    s.read("batch_size", recon.batch_size);
    s.read("scale_lr", recon.scale_lr);
    s.read("warm_up", recon.warm_up);
    s.read("weight", recon.weight);
    s.read("iters", recon.iters);
    std::vector<double> b_range{recon.b_range.first, recon.b_range.second};
    s.read("b_range", b_range);
    s.read("keep_gpu", recon.keep_gpu);
    s.read("round_mode", recon.round_mode);
    s.read("drop_prob", recon.drop_prob);
    s.reject_unknown();
    if (b_range.size() != 2) s.fail_key("b_range", "must have two values [start, end]");
    recon.b_range = {b_range[0], b_range[1]};
    if (recon.batch_size < 1) s.fail_key("batch_size", "must be at least 1");
    if (recon.iters < 0) s.fail_key("iters", "must not be negative");
    if (recon.drop_prob < 0 || recon.drop_prob > 1) s.fail_key("drop_prob", "must be in [0, 1]");
    if (recon.warm_up < 0 || recon.warm_up > 1) s.fail_key("warm_up", "must be in [0, 1]");
    if (recon.round_mode != "learned_hard_sigmoid")
      s.fail_key("round_mode", "must be learned_hard_sigmoid (the only mode of the seed)");
    config.recon = recon;
  }
  if (top.has("ptq4sam")) {
    Section s(top.child("ptq4sam"), "ptq4sam", where);
    s.read("BIG", config.ptq4sam.big);
    s.read("AGQ", config.ptq4sam.agq);
    s.read("global_num", config.ptq4sam.bimodal.global_num);
    s.read("peak_distance", config.ptq4sam.bimodal.peak_distance);
    s.read("peak_height", config.ptq4sam.bimodal.peak_height);
    s.reject_unknown();
    if (config.ptq4sam.bimodal.global_num < 3) s.fail_key("global_num", "must be at least 3");
    if (config.ptq4sam.bimodal.peak_distance < 1) s.fail_key("peak_distance", "must be at least 1");
    if (config.ptq4sam.bimodal.peak_height < 0 || config.ptq4sam.bimodal.peak_height >= 1)
      s.fail_key("peak_height", "must be in [0, 1)");
  }
  top.reject_unknown();
  return config;
}

QuantConfig load_quant_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open the config");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_quant_config(text.str(), path);
}

std::unique_ptr<Observer> make_observer(const QConfig& config) {
  const QuantRange range = config.range();
  const int64_t axis = config.ch_axis;
  const std::string& name = config.observer;
  if (name == "MinMaxObserver") return std::make_unique<MinMaxObserver>(range, axis);
  if (name == "AvgMinMaxObserver") return std::make_unique<AvgMinMaxObserver>(range);
  if (name == "MSEObserver") return std::make_unique<MseObserver>(range, axis, false);
  if (name == "AvgMSEObserver") return std::make_unique<MseObserver>(range, axis, true);
  if (name == "MSEFastObserver") return std::make_unique<MseFastObserver>(range, false);
  if (name == "AvgMSEFastObserver" || name == "SignAvgMSEFastObserver") return std::make_unique<MseFastObserver>(range);
  if (name == "PCTObserver") return std::make_unique<PercentileObserver>(range);
  throw Error("config", "unknown observer '" + name + "'");
}

}  // namespace ptq4sam::quant
