// kernels::Conv2d (oneDNN, NHWC) against ATen's convolution: strides, padding, bias, SiLU,
// several input sizes through one prepared layer.
#include <gtest/gtest.h>

#include "kernels/conv2d.h"

namespace ptq4sam {
namespace {

TEST(Conv2d, MatchesAtenConvolution) {
  at::manual_seed(3);
  struct Case {
    int64_t in, out, k, stride;
    bool bias, silu;
  };
  for (const Case c : {Case{12, 16, 3, 1, false, true}, Case{16, 32, 3, 2, true, true}, Case{32, 8, 1, 1, true, false},
                       Case{5, 7, 5, 1, true, false}}) {
    const at::Tensor weight = at::randn({c.out, c.in, c.k, c.k}) / std::sqrt(double(c.in * c.k * c.k));
    const at::Tensor bias = c.bias ? at::randn({c.out}) : at::Tensor();
    const kernels::Conv2d conv(weight, bias, c.stride, (c.k - 1) / 2,
                               c.silu ? kernels::ConvActivation::kSilu : kernels::ConvActivation::kNone);
    // Two sizes through the same layer: the second reuses (or reorders from) the held weights.
    for (const auto& hw : {std::pair<int64_t, int64_t>{20, 28}, std::pair<int64_t, int64_t>{9, 13}}) {
      const at::Tensor x = at::randn({1, c.in, hw.first, hw.second});
      at::Tensor expected = at::conv2d(x, weight, bias, {c.stride, c.stride}, {(c.k - 1) / 2, (c.k - 1) / 2});
      if (c.silu) expected = expected * at::sigmoid(expected);
      const at::Tensor got = conv.forward(x);
      ASSERT_EQ(got.sizes(), expected.sizes());
      EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
      // Float32 sums of up to 200 products in another order, and oneDNN's own exponential.
      EXPECT_LT((got - expected).abs().max().item<double>(), 1e-4 * (1.0 + expected.abs().max().item<double>()));
    }
    EXPECT_EQ(conv.macs(20, 28), double(((20 + c.k - 1 - c.k) / c.stride + 1) * ((28 + c.k - 1 - c.k) / c.stride + 1)) *
                                     double(weight.numel()));
  }
  EXPECT_THROW(kernels::Conv2d(at::randn({4, 3, 3, 2}), at::Tensor(), 1, 1), std::exception);
  const kernels::Conv2d conv(at::randn({4, 3, 3, 3}), at::Tensor(), 1, 0);
  EXPECT_THROW(conv.forward(at::randn({1, 3, 2, 2})), std::exception);  // smaller than the kernel
  EXPECT_THROW(conv.forward(at::randn({1, 5, 8, 8})), std::exception);  // wrong channels
}

// ResNet's block end: relu(conv(x) + identity) in one primitive, the residual added before the
// activation; odd sizes with stride 2 give ceil(n / 2) as ATen does.
TEST(Conv2d, ReluAndResidualSumMatchAten) {
  at::manual_seed(4);
  const at::Tensor weight = at::randn({24, 10, 3, 3}) / std::sqrt(90.0), bias = at::randn({24});
  const kernels::Conv2d conv(weight, bias, 2, 1, kernels::ConvActivation::kRelu);
  const at::Tensor x = at::randn({1, 10, 25, 19});
  const at::Tensor plain = at::conv2d(x, weight, bias, {2, 2}, {1, 1});
  ASSERT_EQ(plain.sizes(), (std::vector<int64_t>{1, 24, 13, 10}));
  const at::Tensor residual = at::randn(plain.sizes());
  const at::Tensor got = conv.forward(x, residual), got_plain = conv.forward(x);
  // Float32 sums of 90 products in another order.
  EXPECT_LT((got - at::relu(plain + residual)).abs().max().item<double>(), 1e-4);
  EXPECT_LT((got_plain - at::relu(plain)).abs().max().item<double>(), 1e-4);
  EXPECT_GT((got - got_plain).abs().max().item<double>(), 0.1);  // the residual did arrive
  EXPECT_THROW(conv.forward(x, at::randn({1, 24, 12, 10})), std::exception);  // wrong residual shape
}

}  // namespace
}  // namespace ptq4sam
