// The integer linear layer against the fake-quantized float layer it stands for.
#include <gtest/gtest.h>

#include <memory>

#include "kernels/quantized_linear.h"
#include "quant/fake_quant.h"

namespace ptq4sam {
namespace {

struct Case {
  int weight_bits;
  bool weight_symmetric;
  int act_bits;
  bool act_symmetric;
};

TEST(QuantizedLinear, MatchesTheFakeQuantizedLayer) {
  at::manual_seed(11);
  for (const Case c : {Case{8, false, 8, false}, Case{6, false, 6, false}, Case{4, false, 4, false},
                       Case{8, true, 8, true}, Case{4, false, 8, true}}) {
    SCOPED_TRACE("W" + std::to_string(c.weight_bits) + "A" + std::to_string(c.act_bits));
    const int64_t m = 53, k = 96, n = 40;
    const quant::QuantRange wr{c.weight_bits, c.weight_symmetric}, ar{c.act_bits, c.act_symmetric};
    const at::Tensor codes = at::randint(wr.quant_min(), wr.quant_max() + 1, {n, k}, at::kLong);
    const at::Tensor w_scale = at::rand({n}) * 0.01 + 0.001;
    const at::Tensor w_zp = c.weight_symmetric ? at::zeros({n}, at::kLong)
                                               : at::randint(wr.quant_min(), wr.quant_max() + 1, {n}, at::kLong);
    const at::Tensor bias = at::randn({n});
    const at::Tensor weight = (codes - w_zp.unsqueeze(1)).to(at::kFloat) * w_scale.unsqueeze(1);

    const at::Tensor x = at::randn({m, k}) * 2.0 + 0.5;
    const float a_scale = 6.0f / float(ar.quant_max() - ar.quant_min());
    const int32_t a_zp = c.act_symmetric ? 0 : int32_t(ar.quant_max() / 3);
    const at::Tensor x_fq = quant::fake_quantize(x, at::full({}, a_scale), at::full({}, a_zp, at::kInt), ar);
    const at::Tensor expected = at::linear(x_fq, weight, bias);

    const kernels::QuantizedWeight qw = kernels::make_quantized_weight(codes, w_scale, w_zp, c.weight_bits, c.weight_symmetric, bias);
    const kernels::ActivationQuantization aq{a_scale, a_zp, int32_t(ar.quant_min()), int32_t(ar.quant_max())};
    const at::Tensor got = kernels::quantized_linear(x.view({1, m, k}), aq, qw);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{1, m, n}));
    const double tolerance = 1e-5 * expected.abs().max().item<double>();
    EXPECT_LT((got.view({m, n}) - expected).abs().max().item<double>(), tolerance);
  }
}

// The simulated model's layer (code_linear) and the integer one round the same float32
// operations: equal bit for bit, on rows long enough for the vectorized passes.
TEST(QuantizedLinear, AgreesBitForBitWithCodeLinear) {
  at::manual_seed(12);
  for (const int act_bits : {4, 8}) {
    SCOPED_TRACE("A" + std::to_string(act_bits));
    const int64_t m = 96, k = 768, n = 200;
    const kernels::ActivationQuantization aq{0.02f, act_bits == 8 ? 128 : 8, 0, (1 << act_bits) - 1};
    const at::Tensor codes = at::randint(0, 256, {n, k}, at::kInt), w_zp = at::randint(0, 256, {n}, at::kInt);
    const at::Tensor w_scale = at::rand({n}) * 0.01 + 0.001;
    const kernels::QuantizedWeight qw = kernels::make_quantized_weight(codes, w_scale, w_zp, 8, false, at::randn({n}));
    const at::Tensor x = at::randn({m, k});
    const at::Tensor x_codes =
        at::clamp(at::round(x / aq.scale) + aq.zero_point, aq.quant_min, aq.quant_max) - aq.zero_point;
    const at::Tensor expected = kernels::code_linear(x_codes, (codes - w_zp.unsqueeze(1)).to(at::kFloat),
                                                     (aq.scale * w_scale).to(at::kFloat), qw.bias);
    EXPECT_TRUE(at::equal(kernels::quantized_linear(x, aq, qw), expected));
  }
}

// int4 weights unpacked once are reused: layers taking turns, and a new layer made after an
// old one is freed (perhaps at its address), each give the result of the same codes stored as
// bytes (int4 codes lie on the 8-bit grid too, and the sums are exact).
TEST(QuantizedLinear, Int4LayersTakingTurnsKeepTheirOwnCodes) {
  at::manual_seed(13);
  const int64_t m = 20, k = 256, n = 48;
  const kernels::ActivationQuantization aq{0.05f, 8, 0, 15};
  const at::Tensor x = at::randn({m, k});
  struct Layer {
    kernels::QuantizedWeight int4, bytes;
  };
  const auto make = [&] {
    const at::Tensor codes = at::randint(0, 16, {n, k}, at::kInt), zp = at::randint(0, 16, {n}, at::kInt);
    const at::Tensor scale = at::rand({n}) * 0.01 + 0.001;
    return std::make_unique<Layer>(Layer{kernels::make_quantized_weight(codes, scale, zp, 4, false, at::Tensor()),
                                         kernels::make_quantized_weight(codes, scale, zp, 8, false, at::Tensor())});
  };
  const auto expect_own = [&](const Layer& layer) {
    EXPECT_TRUE(at::equal(kernels::quantized_linear(x, aq, layer.int4), kernels::quantized_linear(x, aq, layer.bytes)));
  };
  auto a = make();
  const auto b = make(), c = make();
  for (int turn = 0; turn < 3; ++turn) {
    expect_own(*a);
    expect_own(*b);
  }
  expect_own(*c);
  a.reset();
  const auto d = make();
  expect_own(*d);
  expect_own(*b);
}

TEST(QuantizedLinear, RefusesCodesOffTheGrid) {
  const at::Tensor codes = at::full({2, 4}, 16, at::kLong);
  EXPECT_THROW(kernels::make_quantized_weight(codes, at::ones({2}), at::zeros({2}), 4, false, at::Tensor()), std::exception);
}

}  // namespace
}  // namespace ptq4sam
