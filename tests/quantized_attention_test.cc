// The integer attention against the simulated one: the chunked float attention on the
// fake-quantized q, k and v, with the softmax quantizer as its probability hook.
#include <gtest/gtest.h>

#include "kernels/attention.h"
#include "kernels/quantized_attention.h"
#include "quant/fake_quant.h"
#include "sam/image_encoder.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

using kernels::ActivationQuantization;

at::Tensor fake_quantized(const at::Tensor& x, const ActivationQuantization& q) {
  return quant::fake_quantize(x, at::full({1}, q.scale), at::full({1}, float(q.zero_point)),
                              quant::QuantRange{8, q.quant_min < 0});
}

struct Case {
  int64_t batch, n, heads, head_dim, hk, wk;  // an hk x wk grid of n tokens, or hk = 0: no relative positions
  bool log_probs = false;
  int log_bits = 4;
  double tau = 2.0;
};

struct Comparison {
  double max_diff, mean_diff, far_fraction, flip_bound;
};

Comparison compare(const Case& c) {
  at::manual_seed(11);
  const int64_t channels = c.heads * c.head_dim;
  const at::Tensor qkv = at::randn({c.batch, c.n, 3, channels}) * 2;
  const at::Tensor q = qkv.select(2, 0), k = qkv.select(2, 1), v = qkv.select(2, 2);
  // Self-attention on an hk x wk grid: get_rel_pos's tables, their terms as the official
  // einsums compute them on the fake-quantized q.
  at::Tensor rel_pos_h, rel_pos_w;
  if (c.hk > 0) {
    rel_pos_h = at::randn({c.hk, c.hk, c.head_dim}) * 0.2;
    rel_pos_w = at::randn({c.wk, c.wk, c.head_dim}) * 0.2;
  }
  kernels::IntegerAttention quant;
  quant.q = {0.04f, 0, -128, 127};  // a signed grid: its codes move up into u8
  quant.k = {0.035f, 130, 0, 255};
  quant.v = {0.03f, 121, 0, 255};
  quant.probs = {1.0f / 255, 0, 0, 255};
  const quant::LogQuantTable table(0.9, quant::QuantRange{c.log_bits, false}, c.tau);
  if (c.log_probs) {
    auto grid = std::make_shared<kernels::LogProbabilities>();
    grid->scale = 0.9;
    grid->tau = c.tau;
    grid->levels = 1 << c.log_bits;
    grid->codes = [&table](const float* in, int32_t* codes, int64_t n) { table.codes(in, codes, n); };
    grid->values = table.values();
    quant.log_probs = std::move(grid);
  }
  const kernels::ProbabilityHook hook{[&](const at::Tensor& p, const at::Tensor&) {
                                        return c.log_probs ? table.apply(p) : fake_quantized(p, quant.probs);
                                      },
                                      true, true};
  const at::Tensor v_values = fake_quantized(v, quant.v), q_values = fake_quantized(q, quant.q);
  at::Tensor rel_h, rel_w;
  if (c.hk > 0) {
    const at::Tensor r_q = q_values.reshape({c.batch, c.hk, c.wk, c.heads, c.head_dim});
    rel_h = at::einsum("bhwnc,hkc->bnhwk", {r_q, rel_pos_h}).reshape({c.batch, c.heads, c.n, c.hk});
    rel_w = at::einsum("bhwnc,wkc->bnhwk", {r_q, rel_pos_w}).reshape({c.batch, c.heads, c.n, c.wk});
  }
  const at::Tensor expected =
      kernels::multi_head_attention(q_values, fake_quantized(k, quant.k), v_values, c.heads,
                                    kernels::ScoreScaling::kScaleQueries, rel_h, rel_w, hook);
  const at::Tensor got = kernels::quantized_attention(q, k, v, c.heads, quant, rel_pos_h, rel_pos_w);
  const at::Tensor diff = (got - expected).abs();
  // One probability's code moving by one step (rounding of another summation order) moves an
  // output by at most that step times the largest value.
  const double prob_step = c.log_probs ? 0.9 * (1.0 - std::exp2(-1.0 / c.tau)) : quant.probs.scale;
  return {diff.max().item<double>(), diff.mean().item<double>(), (diff > 1e-4).to(at::kFloat).mean().item<double>(),
          prob_step * v_values.abs().max().item<double>()};
}

void expect_simulated(const Case& c) {
  const Comparison r = compare(c);
  EXPECT_LE(r.max_diff, r.flip_bound + 1e-5);
  EXPECT_LT(r.far_fraction, 0.01);
  EXPECT_LT(r.mean_diff, 1e-4);
}

TEST(QuantizedAttention, WindowsWithRelativePositions) { expect_simulated({3, 63, 3, 16, 7, 9, false}); }
// Grid rows of 50 keys: tables of 64 columns (a global block's width) read 64 at a time.
TEST(QuantizedAttention, WideGridsWithRelativePositions) { expect_simulated({1, 400, 2, 32, 8, 50, false}); }
// AGQ's grids: byte planes of the integer levels (4 bits at tau 1, 2 and 4), and P V in float32
// where planes would be too many (6 bits) or tau is not a power of two.
TEST(QuantizedAttention, LogCodesInPlanes) {
  for (const double tau : {1.0, 2.0, 4.0}) {
    SCOPED_TRACE(tau);
    expect_simulated({2, 63, 2, 16, 7, 9, true, 4, tau});
  }
}
TEST(QuantizedAttention, LogCodesInFloat) {
  expect_simulated({2, 63, 2, 16, 7, 9, true, 6, 2.0});
  expect_simulated({1, 63, 2, 16, 7, 9, true, 4, 3.0});
}
// More query rows than one chunk holds (512K scores, shared among AGQ's planes): the seams.
TEST(QuantizedAttention, GlobalHeadsInChunks) {
  expect_simulated({1, 784, 2, 64, 28, 28, false});
  expect_simulated({1, 784, 1, 64, 28, 28, true, 4, 2.0});
}
TEST(QuantizedAttention, WithoutRelativePositions) { expect_simulated({2, 300, 2, 32, 0, 0, false}); }

// The bytes qkv_code_blocks asks of a fused projection (rows, 3C), made here from its float32
// values by the activation quantizer of each block.
at::Tensor qkv_codes(const at::Tensor& qkv, const kernels::IntegerAttention& quant) {
  const std::vector<kernels::CodeBlock> blocks = kernels::qkv_code_blocks(quant);
  const int64_t c = qkv.size(-1) / 3;
  std::vector<at::Tensor> parts;
  for (size_t b = 0; b < blocks.size(); ++b) {
    const kernels::ActivationCodes a =
        kernels::quantize_activations(qkv.reshape({-1, 3 * c}).narrow(1, int64_t(b) * c, c), blocks[b].quant);
    parts.push_back(at::bitwise_and(a.codes.to(at::kInt) + (blocks[b].shift - a.shift), 0xff).to(at::kByte));
  }
  std::vector<int64_t> shape(qkv.sizes().begin(), qkv.sizes().end());
  return at::cat(parts, 1).view(shape);
}

// The windowed entry point against window_partition -> quantized_attention -> window_unpartition,
// bit for bit: a 9 x 11 grid in windows of 4 (padding on both sides), and one that 4 divides;
// heads of 8 channels, and of SAM's 64 (whose codes the kernel gathers a vector a row).
void expect_windows_match(int64_t height, int64_t width, bool log_probs, int64_t head_dim = 8) {
  at::manual_seed(5);
  const int64_t batch = 2, window = 4, heads = 2, c = heads * head_dim;
  const at::Tensor qkv = at::randn({batch * height * width, 3 * c}) * 2, padding = at::randn({3 * c});
  const at::Tensor rel_pos_h = at::randn({window, window, head_dim}) * 0.2;
  const at::Tensor rel_pos_w = at::randn({window, window, head_dim}) * 0.2;
  kernels::IntegerAttention quant;
  quant.q = {0.04f, 0, -128, 127};
  quant.k = {0.035f, 130, 0, 255};
  quant.v = {0.03f, 121, 0, 255};
  quant.probs = {1.0f / 255, 0, 0, 255};
  const quant::LogQuantTable table(0.9, quant::QuantRange{4, false}, 2.0);
  if (log_probs) {
    auto grid = std::make_shared<kernels::LogProbabilities>();
    grid->scale = 0.9, grid->tau = 2.0, grid->levels = 16;
    grid->codes = [&table](const float* in, int32_t* codes, int64_t n) { table.codes(in, codes, n); };
    grid->values = table.values();
    quant.log_probs = std::move(grid);
  }
  const int64_t hp = (height + window - 1) / window * window, wp = (width + window - 1) / window * window;
  at::Tensor padded = padding.expand({batch, hp, wp, 3 * c}).clone();
  padded.narrow(1, 0, height).narrow(2, 0, width).copy_(qkv.view({batch, height, width, 3 * c}));
  std::pair<int64_t, int64_t> padded_hw;
  const at::Tensor windows = sam::window_partition(padded, window, padded_hw).reshape({-1, window * window, 3 * c});
  const at::Tensor per_window = kernels::quantized_attention(windows.narrow(2, 0, c), windows.narrow(2, c, c),
                                                             windows.narrow(2, 2 * c, c), heads, quant, rel_pos_h,
                                                             rel_pos_w);
  const at::Tensor expected =
      sam::window_unpartition(per_window.view({-1, window, window, c}), window, padded_hw, {height, width});
  const at::Tensor got = kernels::quantized_window_attention(qkv, padding, batch, height, width, window, heads, quant,
                                                             rel_pos_h, rel_pos_w);
  EXPECT_TRUE(at::equal(got.view({batch, height, width, c}), expected))
      << "max |diff| " << (got.view({batch, height, width, c}) - expected).abs().max().item<double>();
  // The projection's codes in place of its values (the integer runtime's qkv hands them over):
  // the same numbers, windowed and global.
  EXPECT_TRUE(at::equal(kernels::quantized_window_attention(qkv_codes(qkv, quant), qkv_codes(padding, quant), batch,
                                                            height, width, window, heads, quant, rel_pos_h, rel_pos_w),
                        got));
  const at::Tensor window_codes = qkv_codes(windows, quant);
  EXPECT_TRUE(at::equal(kernels::quantized_attention(window_codes.narrow(2, 0, c), window_codes.narrow(2, c, c),
                                                     window_codes.narrow(2, 2 * c, c), heads, quant, rel_pos_h,
                                                     rel_pos_w),
                        per_window));
  EXPECT_THROW(kernels::quantized_attention(window_codes.narrow(2, 0, c), windows.narrow(2, c, c),
                                            windows.narrow(2, 2 * c, c), heads, quant, rel_pos_h, rel_pos_w),
               Error);
}

TEST(QuantizedAttention, WindowsWithoutPartitionCopies) {
  expect_windows_match(9, 11, false);
  expect_windows_match(8, 12, false);
  expect_windows_match(9, 11, true);
  expect_windows_match(9, 11, false, 64);
}

TEST(QuantizedAttention, RefusesWindowsThatDoNotFit) {
  kernels::IntegerAttention quant;
  const at::Tensor qkv = at::randn({2 * 9 * 11, 48});
  // Padding is needed (4 divides neither 9 nor 11) and missing; then a grid the rows do not fill.
  EXPECT_THROW(kernels::quantized_window_attention(qkv, at::Tensor(), 2, 9, 11, 4, 2, quant), Error);
  EXPECT_THROW(kernels::quantized_window_attention(qkv, at::randn({48}), 2, 9, 12, 4, 2, quant), Error);
}

TEST(QuantizedAttention, RefusesRelativePositionsThatMissTheKeys) {
  const at::Tensor x = at::randn({1, 12, 16});
  kernels::IntegerAttention quant;
  // 12 = 3 x 4 tokens, heads of 8 channels: a 3 x 3 grid misses, as do tables of other widths
  // or only one table.
  EXPECT_THROW(kernels::quantized_attention(x, x, x, 2, quant, at::randn({3, 3, 8}), at::randn({3, 3, 8})), Error);
  EXPECT_THROW(kernels::quantized_attention(x, x, x, 2, quant, at::randn({3, 3, 4}), at::randn({4, 4, 4})), Error);
  EXPECT_THROW(kernels::quantized_attention(x, x, x, 2, quant, at::randn({3, 3, 8})), Error);
}

}  // namespace
}  // namespace ptq4sam
