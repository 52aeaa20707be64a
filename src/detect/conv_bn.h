#pragma once
// Loading convolutions from a detector's state dict: a convolution followed by batch norm in
// eval mode, folded into one convolution with bias (in float64, so that the fold adds no
// rounding of its own), or a plain convolution with its bias. Each takes the tensors it uses
// out of the dict, so that a checkpoint's weights are freed as the model is built (one copy
// resident, not two).
#include <string>

#include "io/checkpoint.h"
#include "kernels/conv2d.h"

namespace ptq4sam::detect {

// `weight_key` (O, I, k, k) with an odd square kernel, zero padding (k - 1) / 2, no bias, then
// `<bn_prefix>.{weight,bias,running_mean,running_var}` with epsilon `eps`. Throws
// ptq4sam::Error naming the dict's source and the entry for a missing or misshapen tensor.
kernels::Conv2d load_conv_bn(io::StateDict& state, const std::string& weight_key, const std::string& bn_prefix,
                             int64_t stride, double eps, kernels::ConvActivation activation);

// `<prefix>.weight` (odd square kernel, padding (k - 1) / 2) and `<prefix>.bias`, no norm.
kernels::Conv2d load_conv(io::StateDict& state, const std::string& prefix, int64_t stride = 1,
                          kernels::ConvActivation activation = kernels::ConvActivation::kNone);

// `name` taken out of the dict, checked to be a non-empty, finite float tensor of `dim`
// dimensions.
at::Tensor take_float(io::StateDict& state, const std::string& name, int64_t dim);

}  // namespace ptq4sam::detect
