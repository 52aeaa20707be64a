#pragma once
// Scaled dot-product attention that never holds more than a slice of the score matrix: query
// rows are processed in chunks, so a global ViT block (4096 x 4096 scores per head) needs a
// few MB instead of a GB.
#include <ATen/ATen.h>

#include <functional>

namespace ptq4sam::kernels {

// Where the 1/sqrt(d) factor is applied. The two SAM modules differ, and with the decoder's
// large random-weight scores the float32 rounding of that one step shows in the masks, so each
// keeps the official order.
enum class ScoreScaling {
  kScaleQueries,   // (q * d^-0.5) @ k^T: the image encoder
  kDivideScores,   // (q @ k^T) / sqrt(d): the two-way transformer
};

// Transforms the attention probabilities (B, H, N, M) given the values (B, H, M, dv): where a
// softmax quantizer sits. An elementwise hook may be given any rows of one head's
// probabilities at a time, so the attention never holds a whole score matrix.
struct ProbabilityHook {
  std::function<at::Tensor(const at::Tensor& probs, const at::Tensor& values)> transform;
  bool elementwise = false;
  // The transform may run on several heads at once (it keeps no state).
  bool concurrent = false;
  explicit operator bool() const { return bool(transform); }
};

// out = softmax(scaled(q @ k^T) + bias) @ v for q (N, d), k (M, d), v (M, dv) and a
// preallocated out (N, dv), each a 2-D float32 view of any strides. When rel_h (N, Hk) and
// rel_w (N, Wk) are given (M = Hk * Wk), the bias is SAM's decomposed relative position:
// bias[n, i * Wk + j] = rel_h[n, i] + rel_w[n, j]. `probs_hook`, if any, must be elementwise.
void attention_into(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                    ScoreScaling scaling, const at::Tensor& rel_h = at::Tensor(),
                    const at::Tensor& rel_w = at::Tensor(), const ProbabilityHook* probs_hook = nullptr);


// Multi-head attention over (B, N, C) queries and (B, M, C) keys/values split into num_heads
// heads along C (head h owns channels [h*C/H, (h+1)*C/H)); returns (B, N, Cv) with the heads
// recombined. rel_h (B, H, N, Hk) and rel_w (B, H, N, Wk) are optional as above. Inputs may be
// strided views (e.g. slices of a fused qkv projection). Uses differentiable ATen ops, with the
// whole probability matrix, when autograd needs them or a probability hook is not elementwise.
at::Tensor multi_head_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t num_heads,
                                ScoreScaling scaling, const at::Tensor& rel_h = at::Tensor(),
                                const at::Tensor& rel_w = at::Tensor(), const ProbabilityHook& probs_hook = {});

}  // namespace ptq4sam::kernels
