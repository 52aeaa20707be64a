// The chunked attention kernel (heads in parallel, relative-position bias in one pass) against
// the differentiable ATen path it stands for.
#include <gtest/gtest.h>

#include <atomic>

#include "kernels/attention.h"

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
