#include "detect/yolox.h"

#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace ptq4sam::detect {
namespace {

std::string indexed(const std::string& prefix, size_t i) { return prefix + "." + std::to_string(i); }

// mmdetection's keys that every YOLOX has, checked before anything is built so that a wrong
// file gets one message listing what it lacks.
const std::vector<std::string>& required_keys() {
  static const std::vector<std::string> keys = {
      "backbone.stem.conv.conv.weight",         "backbone.stage1.0.conv.weight",
      "backbone.stage2.1.main_conv.conv.weight", "backbone.stage4.1.conv1.conv.weight",
      "neck.reduce_layers.0.conv.weight",        "neck.top_down_blocks.0.main_conv.conv.weight",
      "neck.out_convs.0.conv.weight",            "bbox_head.multi_level_cls_convs.0.0.conv.weight",
      "bbox_head.multi_level_conv_cls.0.weight", "bbox_head.multi_level_conv_obj.2.bias"};
  return keys;
}

std::vector<std::string> missing_keys(const io::StateDict& state) {
  std::vector<std::string> missing;
  for (const auto& key : required_keys())
    if (!state.contains(key)) missing.push_back(key);
  return missing;
}

// Megvii's CSPLayer children conv1/conv2/conv3/m are mmdetection's main/short/final_conv/blocks.
std::string rename_csp_child(const std::string& rest) {
  static const std::pair<const char*, const char*> children[] = {
      {"conv1.", "main_conv."}, {"conv2.", "short_conv."}, {"conv3.", "final_conv."}, {"m.", "blocks."}};
  for (const auto& [from, to] : children)
    if (rest.rfind(from, 0) == 0) return to + rest.substr(std::string(from).size());
  return rest;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

std::string YoloxConfig::describe() const {
  struct Named {
    const char* name;
    double depth, width;
  };
  static const Named sizes[] = {{"YOLOX-nano", 0.33, 0.25}, {"YOLOX-tiny", 0.33, 0.375}, {"YOLOX-s", 0.33, 0.5},
                                {"YOLOX-m", 0.67, 0.75},    {"YOLOX-L", 1.0, 1.0},       {"YOLOX-x", 1.33, 1.25}};
  std::string name = "YOLOX";
  for (const auto& s : sizes)
    if (std::abs(s.depth - deepen_factor()) < 0.02 && std::abs(s.width - widen_factor()) < 1e-6) name = s.name;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s (depth %.2f, width %.3g, %lld classes)", name.c_str(), deepen_factor(),
                widen_factor(), static_cast<long long>(num_classes));
  return buf;
}

CSPDarknet::CSPDarknet(io::StateDict& state, const std::string& prefix)
    : stem_(load_conv_module(state, prefix + ".stem.conv")), spp_(state, prefix + ".stage4.1") {
  if (stem_.in_channels() != 12) throw Error(state.source(), "'" + prefix + ".stem.conv' must take 12 channels (Focus)");
  for (int stage = 1; stage <= 4; ++stage) {
    const std::string name = prefix + ".stage" + std::to_string(stage);
    downsample_.push_back(load_conv_module(state, name + ".0", 2));
    // The last stage has SPP at index 1 and no identity in its bottlenecks (mmdet's arch P5).
    csp_.emplace_back(state, name + (stage == 4 ? ".2" : ".1"), stage != 4);
  }
}

std::array<int64_t, 3> CSPDarknet::out_channels() const {
  return {downsample_[1].out_channels(), downsample_[2].out_channels(), downsample_[3].out_channels()};
}

std::array<int64_t, 4> CSPDarknet::stage_blocks() const {
  return {int64_t(csp_[0].num_blocks()), int64_t(csp_[1].num_blocks()), int64_t(csp_[2].num_blocks()),
          int64_t(csp_[3].num_blocks())};
}

std::array<at::Tensor, 3> CSPDarknet::forward(const at::Tensor& image) const {
  using at::indexing::None;
  using at::indexing::Slice;
  // Focus: space to depth in the order top-left, bottom-left, top-right, bottom-right.
  const at::Tensor focus = at::cat({image.index({"...", Slice(None, None, 2), Slice(None, None, 2)}),
                                    image.index({"...", Slice(1, None, 2), Slice(None, None, 2)}),
                                    image.index({"...", Slice(None, None, 2), Slice(1, None, 2)}),
                                    image.index({"...", Slice(1, None, 2), Slice(1, None, 2)})},
                                   1);
  at::Tensor x = stem_.forward(focus);
  std::array<at::Tensor, 3> outs;
  for (size_t stage = 0; stage < 4; ++stage) {
    x = downsample_[stage].forward(x);
    if (stage == 3) x = spp_.forward(x);
    x = csp_[stage].forward(x);
    if (stage >= 1) outs[stage - 1] = x;
  }
  return outs;
}

YOLOXPAFPN::YOLOXPAFPN(io::StateDict& state, const std::string& prefix) {
  for (size_t i = 0; i < 2; ++i) {
    reduce_layers_.push_back(load_conv_module(state, indexed(prefix + ".reduce_layers", i)));
    top_down_blocks_.emplace_back(state, indexed(prefix + ".top_down_blocks", i), false);
    downsamples_.push_back(load_conv_module(state, indexed(prefix + ".downsamples", i), 2));
    bottom_up_blocks_.emplace_back(state, indexed(prefix + ".bottom_up_blocks", i), false);
  }
  for (size_t i = 0; i < 3; ++i) out_convs_.push_back(load_conv_module(state, indexed(prefix + ".out_convs", i)));
}

std::array<at::Tensor, 3> YOLOXPAFPN::forward(const std::array<at::Tensor, 3>& features) const {
  // Top-down: the coarser map reduced, upsampled (nearest, x2) and joined with the finer one.
  // inner[0] ends as the finest output, inner[1], inner[2] as the reduced coarser maps.
  std::array<at::Tensor, 3> inner;
  at::Tensor high = features[2];
  for (int idx = 2; idx >= 1; --idx) {
    const size_t step = size_t(2 - idx);
    high = reduce_layers_[step].forward(high);
    inner[size_t(idx)] = high;
    const at::Tensor up = at::upsample_nearest2d(high, {high.size(2) * 2, high.size(3) * 2});
    high = top_down_blocks_[step].forward(at::cat({up, features[size_t(idx - 1)]}, 1).contiguous(at::MemoryFormat::ChannelsLast));
  }
  inner[0] = high;
  // Bottom-up: the finer output downsampled and joined with the reduced coarser map.
  std::array<at::Tensor, 3> outs{inner[0], at::Tensor(), at::Tensor()};
  for (size_t idx = 0; idx < 2; ++idx) {
    const at::Tensor down = downsamples_[idx].forward(outs[idx]);
    outs[idx + 1] = bottom_up_blocks_[idx].forward(at::cat({down, inner[idx + 1]}, 1).contiguous(at::MemoryFormat::ChannelsLast));
  }
  for (size_t i = 0; i < 3; ++i) outs[i] = out_convs_[i].forward(outs[i]);
  return outs;
}

YOLOXHead::YOLOXHead(io::StateDict& state, const std::string& prefix) {
  for (size_t level = 0; level < 3; ++level) {
    const std::string cls_prefix = indexed(prefix + ".multi_level_cls_convs", level);
    const std::string reg_prefix = indexed(prefix + ".multi_level_reg_convs", level);
    std::vector<kernels::Conv2d> cls_convs, reg_convs;
    const size_t stacked = count_indexed(state, cls_prefix, "conv.weight");
    if (stacked == 0 || count_indexed(state, reg_prefix, "conv.weight") != stacked)
      throw Error(state.source(), "'" + prefix + "' needs as many stacked cls and reg convolutions per level");
    for (size_t i = 0; i < stacked; ++i) {
      cls_convs.push_back(load_conv_module(state, indexed(cls_prefix, i)));
      reg_convs.push_back(load_conv_module(state, indexed(reg_prefix, i)));
    }
    const std::string reg = indexed(prefix + ".multi_level_conv_reg", level);
    const std::string obj = indexed(prefix + ".multi_level_conv_obj", level);
    const at::Tensor reg_w = state.take(reg + ".weight");
    const at::Tensor obj_w = state.take(obj + ".weight");
    if (reg_w.dim() != 4 || reg_w.size(0) != 4 || obj_w.dim() != 4 || obj_w.size(0) != 1 ||
        reg_w.sizes().slice(1) != obj_w.sizes().slice(1))
      throw Error(state.source(), "'" + reg + "' must have 4 outputs and '" + obj + "' 1, over the same input");
    const kernels::Conv2d reg_obj(at::cat({reg_w, obj_w}, 0).to(at::kFloat),
                                  at::cat({state.take(reg + ".bias"), state.take(obj + ".bias")}, 0).to(at::kFloat), 1,
                                  (reg_w.size(2) - 1) / 2);
    Level l{std::move(cls_convs), std::move(reg_convs), load_conv(state, indexed(prefix + ".multi_level_conv_cls", level)),
            reg_obj};
    if (level == 0) {
      num_classes_ = l.conv_cls.out_channels();
      channels_ = l.cls_convs[0].in_channels();
    }
    if (l.conv_cls.out_channels() != num_classes_ || l.cls_convs[0].in_channels() != channels_)
      throw Error(state.source(), "'" + prefix + "' levels differ in classes or width");
    levels_.push_back(std::move(l));
  }
}

std::array<at::Tensor, 3> YOLOXHead::forward(const std::array<at::Tensor, 3>& features) const {
  std::array<at::Tensor, 3> outs;
  for (size_t level = 0; level < 3; ++level) {
    const Level& l = levels_[level];
    at::Tensor cls = features[level], reg = features[level];
    for (const auto& conv : l.cls_convs) cls = conv.forward(cls);
    for (const auto& conv : l.reg_convs) reg = conv.forward(reg);
    outs[level] = at::cat({l.conv_reg_obj.forward(reg), l.conv_cls.forward(cls)}, 1).contiguous();
  }
  return outs;
}

Yolox::Yolox(io::StateDict& state)
    : backbone_(state, "backbone"), neck_(state, "neck"), bbox_head_(state, "bbox_head") {
  config_.stem_channels = backbone_.stem_channels();
  config_.stage_blocks = backbone_.stage_blocks();
  config_.neck_blocks = neck_.num_blocks();
  config_.head_channels = bbox_head_.channels();
  config_.num_classes = bbox_head_.num_classes();
}

std::array<at::Tensor, 3> Yolox::forward(const at::Tensor& image) const {
  if (image.dim() != 4 || image.size(1) != 3 || image.size(2) % 32 != 0 || image.size(3) % 32 != 0 ||
      image.size(2) == 0 || image.size(3) == 0)
    throw Error("YOLOX", "input must be (N, 3, H, W) with H and W positive multiples of 32");
  return bbox_head_.forward(neck_.forward(backbone_.forward(image.to(at::kFloat))));
}

std::string megvii_to_mmdet_name(const std::string& name) {
  if (starts_with(name, "backbone.backbone.stem.")) return "backbone.stem." + name.substr(23);
  if (starts_with(name, "backbone.backbone.dark")) {
    const std::string rest = name.substr(22);  // "<N>.<i>.<child...>"
    const size_t dot1 = rest.find('.'), dot2 = rest.find('.', dot1 + 1);
    if (dot1 == std::string::npos || dot2 == std::string::npos) return name;
    const int dark = std::atoi(rest.substr(0, dot1).c_str());
    const std::string index = rest.substr(dot1 + 1, dot2 - dot1 - 1);
    std::string child = rest.substr(dot2 + 1);
    const bool csp = (dark == 5 && index == "2") || (dark >= 2 && dark <= 4 && index == "1");
    if (csp) child = rename_csp_child(child);
    return "backbone.stage" + std::to_string(dark - 1) + "." + index + "." + child;
  }
  static const std::pair<const char*, const char*> neck_convs[] = {{"backbone.lateral_conv0.", "neck.reduce_layers.0."},
                                                                   {"backbone.reduce_conv1.", "neck.reduce_layers.1."},
                                                                   {"backbone.bu_conv2.", "neck.downsamples.0."},
                                                                   {"backbone.bu_conv1.", "neck.downsamples.1."}};
  for (const auto& [from, to] : neck_convs)
    if (starts_with(name, from)) return to + name.substr(std::string(from).size());
  static const std::pair<const char*, const char*> neck_csp[] = {{"backbone.C3_p4.", "neck.top_down_blocks.0."},
                                                                 {"backbone.C3_p3.", "neck.top_down_blocks.1."},
                                                                 {"backbone.C3_n3.", "neck.bottom_up_blocks.0."},
                                                                 {"backbone.C3_n4.", "neck.bottom_up_blocks.1."}};
  for (const auto& [from, to] : neck_csp)
    if (starts_with(name, from)) return to + rename_csp_child(name.substr(std::string(from).size()));
  static const std::pair<const char*, const char*> head[] = {{"head.stems.", "neck.out_convs."},
                                                             {"head.cls_convs.", "bbox_head.multi_level_cls_convs."},
                                                             {"head.reg_convs.", "bbox_head.multi_level_reg_convs."},
                                                             {"head.cls_preds.", "bbox_head.multi_level_conv_cls."},
                                                             {"head.reg_preds.", "bbox_head.multi_level_conv_reg."},
                                                             {"head.obj_preds.", "bbox_head.multi_level_conv_obj."}};
  for (const auto& [from, to] : head)
    if (starts_with(name, from)) return to + name.substr(std::string(from).size());
  return name;
}

namespace {

// The model's entries of a checkpoint, in mmdetection's names, or an empty dict.
io::StateDict yolox_entries(const io::StateDict& checkpoint) {
  for (const std::string prefix : {"state_dict.", "model.", ""}) {
    const io::StateDict inner = prefix.empty() ? checkpoint : checkpoint.under(prefix);
    if (inner.contains("backbone.stem.conv.conv.weight")) {
      // mmdetection's ExpMomentumEMAHook backups ('ema_backbone_stem_conv_conv_weight', ...)
      // are no model parameters; mmcv's load_checkpoint skips them as unexpected keys.
      io::StateDict model;
      model.set_source(checkpoint.source());
      for (const auto& key : inner.keys())
        if (key.rfind("ema_", 0) != 0) model.insert(key, inner.at(key));
      return model;
    }
    if (inner.contains("backbone.backbone.stem.conv.conv.weight")) {
      io::StateDict renamed;
      renamed.set_source(checkpoint.source());
      for (const auto& key : inner.keys()) renamed.insert(megvii_to_mmdet_name(key), inner.at(key));
      return renamed;
    }
  }
  return io::StateDict();
}

}  // namespace

bool is_yolox(const io::StateDict& checkpoint) {
  const io::StateDict entries = yolox_entries(checkpoint);
  return entries.size() > 0 && missing_keys(entries).empty();
}

std::vector<std::string> yolox_missing_keys(const io::StateDict& checkpoint) {
  const io::StateDict entries = yolox_entries(checkpoint);
  return missing_keys(entries.size() > 0 ? entries : checkpoint);
}

io::StateDict yolox_state_dict(const io::StateDict& checkpoint) {
  io::StateDict entries = yolox_entries(checkpoint);
  if (entries.size() == 0) entries = checkpoint;
  const std::vector<std::string> missing = missing_keys(entries);
  if (!missing.empty()) {
    std::string list;
    for (const auto& key : missing) list += (list.empty() ? "" : ", ") + key;
    throw Error(checkpoint.source(), "not a YOLOX checkpoint (mmdetection or Megvii layout): missing " + list);
  }
  entries.set_source(checkpoint.source());
  return entries;
}

}  // namespace ptq4sam::detect
