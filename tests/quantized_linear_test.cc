// The integer linear layer against the fake-quantized float layer it stands for.
#include <gtest/gtest.h>

#include <limits>
#include <memory>

#include "kernels/gelu.h"
#include "kernels/quantize_step.h"
#include "kernels/quantized_linear.h"
#include "quant/fake_quant.h"

namespace ptq4sam {
namespace {

// The integer linear's products are oneDNN's u8 x s8 ones, exact only with VNNI (elsewhere the
// artifact loader keeps such layers simulated, which IntegerRuntime.FallsBackWithoutVnni holds).
#define PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL()                                                  \
  if (!kernels::integer_matmul_exact())                                                         \
    GTEST_SKIP() << "no VNNI here (or PTQ4SAM_CPU turned it off): the integer linear is not used"

struct Case {
  int weight_bits;
  bool weight_symmetric;
  int act_bits;
  bool act_symmetric;
};

TEST(QuantizedLinear, MatchesTheFakeQuantizedLayer) {
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
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
// The activation codes divide by the scale without a division (a reciprocal and a correction):
// still the fake quantizer's quotient, so its codes, at rounding ties, at the clamps, for
// infinite, huge and subnormal inputs, on signed, unsigned and 4-bit grids.
TEST(QuantizedLinear, CodesAreTheFakeQuantizersToTheBit) {
  at::manual_seed(11);
  const float inf = std::numeric_limits<float>::infinity();
  for (const float scale : {0.0371f, 1.0f / 3.0f, 7.1e-6f, 913.5f}) {
    for (const auto& grid : {std::pair<int32_t, int32_t>{0, 255}, {-128, 127}, {-8, 7}}) {
      kernels::ActivationQuantization q;
      q.scale = scale;
      q.quant_min = grid.first;
      q.quant_max = grid.second;
      q.zero_point = grid.first < 0 ? 1 : 131;
      // Ties (k + 0.5) scale, ordinary values, and the extremes, 1037 to a row (not whole vectors).
      const at::Tensor ties = (at::randint(-300, 300, {40, 1037}).to(at::kFloat) + 0.5f) * scale;
      const at::Tensor ordinary = at::randn({40, 1037}) * (100.0f * scale);
      at::Tensor x = at::cat({ties, ordinary});
      x.select(1, 0).fill_(inf);
      x.select(1, 1).fill_(-inf);
      x.select(1, 2).fill_(3e38f);
      x.select(1, 3).fill_(-1e-42f);
      x.select(1, 4).fill_(2e-39f);
      const kernels::ActivationCodes codes = kernels::quantize_activations(x, q);
      const float* in = x.data_ptr<float>();
      const uint8_t* got = codes.codes.data_ptr<uint8_t>();
      int64_t mismatched = 0;
      for (int64_t r = 0; r < x.size(0); ++r) {
        int32_t sum = 0;
        for (int64_t c = 0; c < x.size(1); ++c) {
          const int64_t i = r * x.size(1) + c;
          const int32_t want = int32_t(kernels::quantize_step(in[i], scale, float(q.zero_point), float(q.quant_min),
                                                              float(q.quant_max))) + codes.shift;
          mismatched += got[i] != uint8_t(want);
          sum += want;
        }
        EXPECT_EQ(codes.row_sums[size_t(r)], sum) << "row " << r;
      }
      EXPECT_EQ(mismatched, 0) << "scale " << scale << " grid [" << grid.first << ", " << grid.second << "]";
    }
  }
}

TEST(QuantizedLinear, AgreesBitForBitWithCodeLinear) {
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
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
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
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

// An MLP's hidden layer handed on as codes: the same codes and row sums as the float32 output
// quantized by the next layer's quantizer (unsigned and signed grids), and a residual added in
// the output pass as at::add adds it.
TEST(QuantizedLinear, HandsItsOutputOnAsCodes) {
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
  at::manual_seed(14);
  const int64_t m = 37, k = 128, n = 300;
  const kernels::ActivationQuantization aq{0.03f, 9, 0, 15};
  const at::Tensor codes = at::randint(0, 16, {n, k}, at::kInt), zp = at::randint(0, 16, {n}, at::kInt);
  const kernels::QuantizedWeight qw =
      kernels::make_quantized_weight(codes, at::rand({n}) * 0.02 + 0.001, zp, 4, false, at::randn({n}));
  const kernels::ActivationCodes input = kernels::quantize_activations(at::randn({m, k}), aq);
  for (const kernels::ActivationQuantization next :
       {kernels::ActivationQuantization{0.01f, 20, 0, 255}, kernels::ActivationQuantization{0.02f, 0, -8, 7}}) {
    for (const kernels::Activation act : {kernels::Activation::kGelu, kernels::Activation::kNone}) {
      const kernels::ActivationCodes expected =
          kernels::quantize_activations(kernels::quantized_linear(input, qw, act), next);
      const kernels::ActivationCodes got = kernels::quantized_linear_codes(input, qw, act, next);
      EXPECT_TRUE(at::equal(got.codes, expected.codes));
      EXPECT_EQ(got.row_sums, expected.row_sums);
      EXPECT_EQ(got.shift, expected.shift);
      // The codes span the grid: the comparison is not between two constant tensors.
      EXPECT_GT(got.codes.max().item<int>() - got.codes.min().item<int>(), 4);
    }
  }
  // Blocks of columns, each under its own quantizer and shift (the attention's q | k | v).
  const std::vector<kernels::CodeBlock> blocks{{kernels::ActivationQuantization{0.01f, 20, 0, 255}, 0},
                                               {kernels::ActivationQuantization{0.02f, 0, -128, 127}, 0},
                                               {kernels::ActivationQuantization{0.015f, 128, 0, 255}, -128}};
  const at::Tensor bytes = kernels::quantized_linear_block_codes(input, qw, kernels::Activation::kNone, blocks);
  const at::Tensor output = kernels::quantized_linear(input, qw);
  for (size_t b = 0; b < blocks.size(); ++b) {
    const kernels::ActivationCodes block = kernels::quantize_activations(output.narrow(1, int64_t(b) * 100, 100), blocks[b].quant);
    const at::Tensor expected = at::bitwise_and(block.codes.to(at::kInt) + (blocks[b].shift - block.shift), 0xff);
    EXPECT_TRUE(at::equal(bytes.narrow(1, int64_t(b) * 100, 100).to(at::kInt), expected)) << "block " << b;
  }
  EXPECT_THROW(kernels::quantized_linear_block_codes(input, qw, kernels::Activation::kNone,
                                                     std::vector<kernels::CodeBlock>(7, blocks[0])),
               std::exception);
  const at::Tensor residual = at::randn({m, n});
  const at::Tensor plain = kernels::quantized_linear(input, qw);
  at::Tensor into = at::empty({2 * m, n});
  const at::Tensor summed = kernels::quantized_linear(input, qw, kernels::Activation::kNone, residual, into.narrow(0, m, m));
  EXPECT_TRUE(at::equal(summed, residual + plain));
  EXPECT_TRUE(at::equal(into.narrow(0, m, m), residual + plain));
  EXPECT_THROW(kernels::quantized_linear(input, qw, kernels::Activation::kNone, at::Tensor(), at::empty({m, n + 1})),
               std::exception);
}

// Our GELU against torch's, and each value independent of where it lies in the span.
TEST(Gelu, MatchesTorchToAFewUlpAnywhereInASpan) {
  at::manual_seed(15);
  const at::Tensor x = at::cat({at::randn({5000}) * 3.0, at::linspace(-12.0, 12.0, 1001), at::zeros({1})});
  at::Tensor ours = x.clone();
  kernels::gelu_(ours);
  const at::Tensor reference = at::gelu(x.to(at::kDouble));
  const at::Tensor error = (ours.to(at::kDouble) - reference).abs();
  // erf to 1.5e-7 (as torch's vectorised erf), scaled by |x| / 2.
  EXPECT_LT((error / (x.to(at::kDouble).abs() * 0.5 + 1e-30)).max().item<double>(), 6e-7);
  EXPECT_LT(((ours - at::gelu(x)).abs() / (x.abs() + 1.0)).max().item<double>(), 1e-6);
  for (const int64_t offset : {1, 7, 13}) {
    at::Tensor span = x.narrow(0, offset, 999).clone();
    kernels::gelu_inplace(span.data_ptr<float>(), span.numel());
    EXPECT_TRUE(at::equal(span, ours.narrow(0, offset, 999)));
  }
}

TEST(QuantizedLinear, RefusesCodesOffTheGrid) {
  const at::Tensor codes = at::full({2, 4}, 16, at::kLong);
  EXPECT_THROW(kernels::make_quantized_weight(codes, at::ones({2}), at::zeros({2}), 4, false, at::Tensor()), std::exception);
}

}  // namespace
}  // namespace ptq4sam
