#include "detect/random_weights.h"

#include <cmath>
#include <string>

namespace ptq4sam::detect {
namespace {

class Builder {
 public:
  explicit Builder(uint64_t seed) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

  // A convolution without bias and its batch norm; `gain` scales the norm's weight (small on
  // a residual branch's last norm keeps a deep random ResNet's activations bounded).
  void conv_bn(const std::string& weight_key, const std::string& bn, int64_t in, int64_t out, int64_t k,
               double gain = 1.0) {
    weight(weight_key, {out, in, k, k}, std::sqrt(2.0 / double(in * k * k)));
    state_.insert(bn + ".weight", gain * (at::ones({out}) + 0.1 * at::randn({out}, gen_)));
    state_.insert(bn + ".bias", 0.1 * at::randn({out}, gen_));
    state_.insert(bn + ".running_mean", 0.1 * at::randn({out}, gen_));
    state_.insert(bn + ".running_var", at::ones({out}) + 0.2 * at::rand({out}, gen_));
    state_.insert(bn + ".num_batches_tracked", at::zeros({}, at::kLong));
  }

  void conv_module(const std::string& prefix, int64_t in, int64_t out, int64_t k) {
    conv_bn(prefix + ".conv.weight", prefix + ".bn", in, out, k);
  }

  void conv(const std::string& prefix, int64_t in, int64_t out, double bias, int64_t k = 1, double gain = 0.1) {
    weight(prefix + ".weight", {out, in, k, k}, gain * std::sqrt(1.0 / double(in * k * k)));
    state_.insert(prefix + ".bias", at::full({out}, bias) + 0.1 * at::randn({out}, gen_));
  }

  void fc(const std::string& prefix, int64_t in, int64_t out, double gain) {
    weight(prefix + ".weight", {out, in}, gain * std::sqrt(1.0 / double(in)));
    state_.insert(prefix + ".bias", 0.1 * at::randn({out}, gen_));
  }

  void csp_layer(const std::string& prefix, int64_t in, int64_t out, int64_t blocks) {
    const int64_t mid = int64_t(double(out) * 0.5);
    conv_module(prefix + ".main_conv", in, mid, 1);
    conv_module(prefix + ".short_conv", in, mid, 1);
    conv_module(prefix + ".final_conv", 2 * mid, out, 1);
    for (int64_t i = 0; i < blocks; ++i) {
      const std::string block = prefix + ".blocks." + std::to_string(i);
      conv_module(block + ".conv1", mid, mid, 1);
      conv_module(block + ".conv2", mid, mid, 3);
    }
  }

  io::StateDict take() { return std::move(state_); }

 private:
  void weight(const std::string& name, at::IntArrayRef shape, double std) {
    state_.insert(name, std * at::randn(shape, gen_));
  }

  at::Generator gen_;
  io::StateDict state_;
};

}  // namespace

io::StateDict random_yolox_state_dict(double deepen, double widen, int64_t num_classes, uint64_t seed) {
  const auto width = [&](int64_t c) { return int64_t(double(c) * widen); };
  const auto depth = [&](int64_t n) { return std::max<int64_t>(int64_t(std::round(double(n) * deepen)), 1); };
  Builder b(seed);
  b.conv_module("backbone.stem.conv", 12, width(64), 3);
  const int64_t stages[4][3] = {{64, 128, 3}, {128, 256, 9}, {256, 512, 9}, {512, 1024, 3}};
  for (int s = 0; s < 4; ++s) {
    const std::string stage = "backbone.stage" + std::to_string(s + 1);
    const int64_t in = width(stages[s][0]), out = width(stages[s][1]);
    b.conv_module(stage + ".0", in, out, 3);
    if (s == 3) {
      b.conv_module(stage + ".1.conv1", out, out / 2, 1);
      b.conv_module(stage + ".1.conv2", out / 2 * 4, out, 1);
    }
    b.csp_layer(stage + (s == 3 ? ".2" : ".1"), out, out, depth(stages[s][2]));
  }
  const int64_t c3 = width(256), c4 = width(512), c5 = width(1024), neck_blocks = depth(3);
  b.conv_module("neck.reduce_layers.0", c5, c4, 1);
  b.csp_layer("neck.top_down_blocks.0", 2 * c4, c4, neck_blocks);
  b.conv_module("neck.reduce_layers.1", c4, c3, 1);
  b.csp_layer("neck.top_down_blocks.1", 2 * c3, c3, neck_blocks);
  b.conv_module("neck.downsamples.0", c3, c3, 3);
  b.csp_layer("neck.bottom_up_blocks.0", 2 * c3, c4, neck_blocks);
  b.conv_module("neck.downsamples.1", c4, c4, 3);
  b.csp_layer("neck.bottom_up_blocks.1", 2 * c4, c5, neck_blocks);
  const int64_t in_channels[3] = {c3, c4, c5};
  const int64_t head = width(256);
  for (int i = 0; i < 3; ++i) b.conv_module("neck.out_convs." + std::to_string(i), in_channels[i], head, 1);
  for (int level = 0; level < 3; ++level) {
    const std::string l = std::to_string(level);
    for (int j = 0; j < 2; ++j) {
      b.conv_module("bbox_head.multi_level_cls_convs." + l + "." + std::to_string(j), head, head, 3);
      b.conv_module("bbox_head.multi_level_reg_convs." + l + "." + std::to_string(j), head, head, 3);
    }
    b.conv("bbox_head.multi_level_conv_cls." + l, head, num_classes, -2.0);
    b.conv("bbox_head.multi_level_conv_reg." + l, head, 4, 0.0);
    b.conv("bbox_head.multi_level_conv_obj." + l, head, 1, -6.0);
  }
  return b.take();
}

io::StateDict random_faster_rcnn_state_dict(int64_t base, int64_t fpn, int64_t fc, int64_t num_classes, uint64_t seed) {
  Builder b(seed);
  b.conv_bn("backbone.conv1.weight", "backbone.bn1", 3, base, 7);
  const int64_t blocks[4] = {3, 4, 6, 3};
  int64_t in = base;
  int64_t c[4];
  for (int layer = 0; layer < 4; ++layer) {
    const int64_t width = base << layer, out = 4 * width;
    for (int64_t i = 0; i < blocks[layer]; ++i) {
      const std::string p = "backbone.layer" + std::to_string(layer + 1) + "." + std::to_string(i);
      b.conv_bn(p + ".conv1.weight", p + ".bn1", in, width, 1);
      b.conv_bn(p + ".conv2.weight", p + ".bn2", width, width, 3);
      b.conv_bn(p + ".conv3.weight", p + ".bn3", width, out, 1, 0.2);
      if (i == 0) b.conv_bn(p + ".downsample.0.weight", p + ".downsample.1", in, out, 1);
      in = out;
    }
    c[layer] = in;
  }
  for (int i = 0; i < 4; ++i) b.conv("neck.lateral_convs." + std::to_string(i) + ".conv", c[i], fpn, 0.0, 1, 1.0);
  for (int i = 0; i < 4; ++i) b.conv("neck.fpn_convs." + std::to_string(i) + ".conv", fpn, fpn, 0.0, 3, 1.0);
  b.conv("rpn_head.rpn_conv", fpn, fpn, 0.0, 3, 1.4);
  b.conv("rpn_head.rpn_cls", fpn, 3, -2.0, 1, 1.0);
  b.conv("rpn_head.rpn_reg", fpn, 12, 0.0, 1, 0.1);
  b.fc("roi_head.bbox_head.shared_fcs.0", fpn * 49, fc, 1.4);
  b.fc("roi_head.bbox_head.shared_fcs.1", fc, fc, 1.4);
  b.fc("roi_head.bbox_head.fc_cls", fc, num_classes + 1, 3.0);
  b.fc("roi_head.bbox_head.fc_reg", fc, 4 * num_classes, 0.1);
  return b.take();
}

}  // namespace ptq4sam::detect
