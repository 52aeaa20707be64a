#pragma once
// YOLOX (Megvii's network, as mmdetection 2.26 runs it): CSPDarknet backbone with a Focus stem
// and an SPP bottleneck, YOLOX's PAFPN neck and its decoupled head. Modules and parameters
// carry mmdetection's names (mmdet/models/backbones/csp_darknet.py, necks/yolox_pafpn.py,
// dense_heads/yolox_head.py); Megvii's checkpoints are renamed into them at load. Depth, width
// and classes come from the tensor shapes, so nano to X load alike (not the depthwise ones).
#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#include "detect/csp_layer.h"
#include "io/checkpoint.h"

namespace ptq4sam::detect {

struct YoloxConfig {
  int64_t stem_channels = 0;               // 64 x widen factor
  std::array<int64_t, 4> stage_blocks{};   // CSP blocks in stage1..stage4 (3, 9, 9, 3 x deepen factor)
  int64_t neck_blocks = 0;                 // CSP blocks in each neck block
  int64_t head_channels = 0;
  int64_t num_classes = 0;
  // "YOLOX-L (depth 1.00, width 1.00, 80 classes)"; "YOLOX" for sizes without a name.
  std::string describe() const;
  double deepen_factor() const { return double(stage_blocks[1]) / 9.0; }
  double widen_factor() const { return double(stem_channels) / 64.0; }
};

class CSPDarknet {
 public:
  CSPDarknet(io::StateDict& state, const std::string& prefix);
  // The stride 8, 16 and 32 maps (mmdet's out_indices (2, 3, 4)).
  std::array<at::Tensor, 3> forward(const at::Tensor& image) const;
  std::array<int64_t, 3> out_channels() const;
  int64_t stem_channels() const { return stem_.out_channels(); }
  std::array<int64_t, 4> stage_blocks() const;

 private:
  kernels::Conv2d stem_;
  std::vector<kernels::Conv2d> downsample_;  // stage1..4's first (stride 2) convolution
  std::vector<CSPLayer> csp_;                // stage1..4's CSP layer
  SPPBottleneck spp_;                        // stage4, between its convolution and its CSP layer
};

class YOLOXPAFPN {
 public:
  YOLOXPAFPN(io::StateDict& state, const std::string& prefix);
  std::array<at::Tensor, 3> forward(const std::array<at::Tensor, 3>& features) const;
  int64_t num_blocks() const { return int64_t(top_down_blocks_[0].num_blocks()); }

 private:
  std::vector<kernels::Conv2d> reduce_layers_, downsamples_, out_convs_;
  std::vector<CSPLayer> top_down_blocks_, bottom_up_blocks_;
};

class YOLOXHead {
 public:
  YOLOXHead(io::StateDict& state, const std::string& prefix);
  // Per level, (N, 5 + classes, H, W) NCHW: box (dx, dy, log w, log h), objectness logit, class
  // logits; Megvii's order torch.cat([reg, obj, cls], 1).
  std::array<at::Tensor, 3> forward(const std::array<at::Tensor, 3>& features) const;
  int64_t num_classes() const { return num_classes_; }
  int64_t channels() const { return channels_; }

 private:
  struct Level {
    std::vector<kernels::Conv2d> cls_convs, reg_convs;
    kernels::Conv2d conv_cls, conv_reg_obj;  // conv_reg and conv_obj as one 5-channel product
  };
  std::vector<Level> levels_;
  int64_t num_classes_ = 0, channels_ = 0;
};

// The whole network, float32 on the CPU.
class Yolox {
 public:
  // `state` in mmdetection's names (the model's keys, without a "state_dict." prefix).
  explicit Yolox(io::StateDict& state);
  const YoloxConfig& config() const { return config_; }
  // image: (N, 3, H, W) float32 with H and W multiples of 32 (BGR 0..255 as the seed feeds it).
  std::array<at::Tensor, 3> forward(const at::Tensor& image) const;

 private:
  CSPDarknet backbone_;
  YOLOXPAFPN neck_;
  YOLOXHead bbox_head_;
  YoloxConfig config_;
};

// Megvii's parameter name in mmdetection's naming ("backbone.backbone.dark5.2.conv1.conv.weight"
// -> "backbone.stage4.2.main_conv.conv.weight"); names it does not know come back unchanged.
std::string megvii_to_mmdet_name(const std::string& name);

// The YOLOX weights of a checkpoint: mmdetection's {'meta', 'state_dict'} (its `ema_*` buffers
// ignored, as mmcv's load_checkpoint does), Megvii's {'model', 'optimizer', ...}, or a bare
// state dict in either naming; renamed to mmdetection's keys. Throws ptq4sam::Error naming the
// file and the missing keys when it is no YOLOX.
io::StateDict yolox_state_dict(const io::StateDict& checkpoint);

// True when the checkpoint's keys look like a YOLOX in either naming.
bool is_yolox(const io::StateDict& checkpoint);
// Keys every YOLOX has (mmdetection's names) that `checkpoint` lacks, for error messages.
std::vector<std::string> yolox_missing_keys(const io::StateDict& checkpoint);

}  // namespace ptq4sam::detect
