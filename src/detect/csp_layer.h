#pragma once
// The building blocks of YOLOX as mmdetection names them (mmdet/models/utils/csp_layer.py,
// backbones/csp_darknet.py, mmcv's ConvModule): each loads from a state dict under its prefix,
// with batch norm folded into the convolution, and takes the tensors it uses out of the dict,
// so that a checkpoint's weights are freed as the model is built (one copy resident, not two).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "detect/conv_bn.h"
#include "kernels/conv2d.h"

namespace ptq4sam::detect {

// Batch-norm epsilon of YOLOX (mmdetection's and Megvii's configs both use 1e-3).
constexpr double kYoloxBatchNormEps = 1e-3;

// mmcv's ConvModule: conv (no bias, zero padding (k - 1) / 2) -> BN -> Swish. `<prefix>.conv.weight`
// and `<prefix>.bn.{weight,bias,running_mean,running_var}`; BN is folded in float64.
kernels::Conv2d load_conv_module(io::StateDict& state, const std::string& prefix, int64_t stride = 1);

// conv1 (1x1) -> conv2 (3x3), plus the input when `add_identity` and the widths agree.
class DarknetBottleneck {
 public:
  DarknetBottleneck(io::StateDict& state, const std::string& prefix, bool add_identity);
  at::Tensor forward(const at::Tensor& x) const;

 private:
  kernels::Conv2d conv1_, conv2_;
  bool add_identity_;
};

// final_conv(cat(blocks(main_conv(x)), short_conv(x))). The number of blocks is read from the
// state dict.
class CSPLayer {
 public:
  CSPLayer(io::StateDict& state, const std::string& prefix, bool add_identity);
  at::Tensor forward(const at::Tensor& x) const;
  size_t num_blocks() const { return blocks_.size(); }

 private:
  kernels::Conv2d main_conv_, short_conv_, final_conv_;
  std::vector<DarknetBottleneck> blocks_;
};

// conv2(cat(y, maxpool5(y), maxpool9(y), maxpool13(y))) with y = conv1(x); stride 1, padding
// k / 2 (padded cells never win, as PyTorch pads max pooling with -inf).
class SPPBottleneck {
 public:
  SPPBottleneck(io::StateDict& state, const std::string& prefix);
  at::Tensor forward(const at::Tensor& x) const;

 private:
  kernels::Conv2d conv1_, conv2_;
};

// How many consecutive `<prefix>.<i>.<suffix>` entries exist, from i = 0.
size_t count_indexed(const io::StateDict& state, const std::string& prefix, const std::string& suffix);

}  // namespace ptq4sam::detect
