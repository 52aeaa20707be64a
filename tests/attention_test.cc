// The chunked attention kernel (heads in parallel, relative-position bias in one pass) against
// the differentiable ATen path it stands for.
#include <gtest/gtest.h>

#include <atomic>

#include "kernels/attention.h"
#include "kernels/cpu_isa.h"

namespace ptq4sam {
namespace {

struct Inputs {
  at::Tensor q, k, v, rel_h, rel_w;
};

// Two windows of 7 x 9 tokens, 3 heads of width 8, with SAM's decomposed relative positions.
Inputs windowed_inputs() {
  at::manual_seed(5);
  const int64_t b = 2, hk = 7, wk = 9, n = hk * wk, c = 24, heads = 3;
  return {at::randn({b, n, c}), at::randn({b, n, c}), at::randn({b, n, c}), at::randn({b, heads, n, hk}),
          at::randn({b, heads, n, wk})};
}

at::Tensor reference(const Inputs& in, const kernels::ProbabilityHook& hook) {
  // A query that requires grad sends the kernel down its autograd path, with whole score maps.
  const at::Tensor q = in.q.clone().requires_grad_(true);
  return kernels::multi_head_attention(q, in.k, in.v, 3, kernels::ScoreScaling::kScaleQueries, in.rel_h, in.rel_w, hook)
      .detach();
}

at::Tensor fast(const Inputs& in, const kernels::ProbabilityHook& hook) {
  return kernels::multi_head_attention(in.q, in.k, in.v, 3, kernels::ScoreScaling::kScaleQueries, in.rel_h, in.rel_w,
                                       hook);
}

TEST(Attention, ChunkedHeadsMatchTheAutogradPath) {
  const Inputs in = windowed_inputs();
  const at::Tensor expected = reference(in, {});
  EXPECT_TRUE(at::allclose(fast(in, {}), expected, 1e-5, 1e-6));
}

// A probability hook that keeps state runs on one head at a time; a stateless one may run on
// several at once. Both give the autograd path's result.
TEST(Attention, ProbabilityHooksRunSeriallyUnlessConcurrent) {
  const Inputs in = windowed_inputs();
  std::atomic<int> running{0}, most_at_once{0}, calls{0};
  const auto halve = [&](const at::Tensor& probs, const at::Tensor&) {
    const int now = ++running;
    int seen = most_at_once.load();
    while (now > seen && !most_at_once.compare_exchange_weak(seen, now)) {
    }
    ++calls;
    const at::Tensor out = probs * 0.5;
    --running;
    return out;
  };
  const kernels::ProbabilityHook serial{halve, true, false}, concurrent{halve, true, true};
  const at::Tensor expected = reference(in, serial);
  calls = 0;

  EXPECT_TRUE(at::allclose(fast(in, serial), expected, 1e-5, 1e-6));
  EXPECT_EQ(most_at_once.load(), 1);
  EXPECT_EQ(calls.load(), 2 * 3);  // each head of each window, in one chunk

  EXPECT_TRUE(at::allclose(fast(in, concurrent), expected, 1e-5, 1e-6));
}

}  // namespace
}  // namespace ptq4sam

namespace ptq4sam {
namespace {

// The decoder's image-to-token direction: many queries over a few prompt tokens, which the
// kernel runs fused (scores, softmax and output in one pass per row). Rows past the last full
// group of sixteen take the scalar version, which must give the same bits.
struct FewKeysCase {
  int64_t queries, keys, width, heads;
  kernels::ScoreScaling scaling;
};

TEST(Attention, FewKeysFusedMatchesTheAutogradPathAndTheScalarVersion) {
  for (const FewKeysCase c : {FewKeysCase{4096 + 5, 7, 128, 8, kernels::ScoreScaling::kDivideScores},
                              FewKeysCase{37, 16, 48, 3, kernels::ScoreScaling::kScaleQueries},
                              FewKeysCase{20, 1, 32, 2, kernels::ScoreScaling::kDivideScores}}) {
    SCOPED_TRACE(testing::Message() << c.queries << " queries, " << c.keys << " keys");
    at::manual_seed(11);
    // Scores of a few units, as the decoder's; the query is a slice of a wider tensor (a fused
    // projection's), so rows are strided.
    const at::Tensor wide = at::randn({2, c.queries, 2 * c.width});
    const at::Tensor q = wide.narrow(2, c.width, c.width), k = at::randn({2, c.keys, c.width}),
                     v = at::randn({2, c.keys, c.width});
    const at::Tensor expected =
        kernels::multi_head_attention(q.clone().requires_grad_(true), k, v, c.heads, c.scaling).detach();
    const at::Tensor fused = kernels::multi_head_attention(q, k, v, c.heads, c.scaling);
    // The softmax's exponential is exp_avx512's scheme (within 2 ulp of expf) and the sums run
    // in another order than BLAS's: a few ulp of outputs of size ~1.
    EXPECT_TRUE(at::allclose(fused, expected, 1e-5, 1e-5)) << (fused - expected).abs().max().item<double>();
    const kernels::ScopedCpuLimit generic(kernels::CpuIsa::kGeneric);
    EXPECT_TRUE(at::equal(kernels::multi_head_attention(q, k, v, c.heads, c.scaling), fused));
  }
}

}  // namespace
}  // namespace ptq4sam
