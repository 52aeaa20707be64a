#include <ATen/Parallel.h>
#include <ATen/ScalarOps.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cpu_isa.h"
#include "kernels/exp.h"
#include "kernels/matmul.h"
#include "kernels/thread_scratch.h"

namespace ptq4sam::kernels {
namespace {

// Scores of one chunk stay well inside L2/L3 (here 1M floats = 4 MB).
constexpr int64_t kChunkScores = 1 << 20;

// Python's `head_dim ** -0.5` and `math.sqrt(head_dim)`, both doubles that ATen rounds to float.
double query_scale(int64_t head_dim) { return std::pow(double(head_dim), -0.5); }
double score_divisor(int64_t head_dim) { return std::sqrt(double(head_dim)); }

at::Tensor split_heads(const at::Tensor& x, int64_t num_heads) {
  return x.view({x.size(0), x.size(1), num_heads, x.size(2) / num_heads}).permute({0, 2, 1, 3});
}

at::Tensor attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t num_heads,
                              ScoreScaling scaling, const at::Tensor& rel_h, const at::Tensor& rel_w,
                              const ProbabilityHook& probs_hook) {
  const at::Tensor qh = split_heads(q, num_heads), kh = split_heads(k, num_heads), vh = split_heads(v, num_heads);
  const int64_t d = qh.size(-1);
  at::Tensor attn = scaling == ScoreScaling::kScaleQueries
                        ? at::matmul(qh * query_scale(d), kh.transpose(-2, -1))
                        : at::matmul(qh, kh.transpose(-2, -1)) / score_divisor(d);
  if (rel_h.defined()) {
    const auto s = attn.sizes();
    attn = (attn.view({s[0], s[1], s[2], rel_h.size(-1), rel_w.size(-1)}) + rel_h.unsqueeze(-1) +
            rel_w.unsqueeze(-2))
               .view(s);
  }
  at::Tensor probs = at::softmax(attn, -1);
  if (probs_hook) probs = probs_hook.transform(probs, vh);
  const at::Tensor out = at::matmul(probs, vh);
  return out.permute({0, 2, 1, 3}).reshape({q.size(0), q.size(1), v.size(2)});
}

// scores[n, i * Wk + j] += rel_h[n, i], then += rel_w[n, j]: one pass with the rounding of the
// official two broadcast adds, ((score + rel_h) + rel_w).
void add_rel_pos(const at::Tensor& scores, const at::Tensor& rel_h_in, const at::Tensor& rel_w_in) {
  const at::Tensor rel_h = rel_h_in.stride(1) == 1 ? rel_h_in : rel_h_in.contiguous();
  const at::Tensor rel_w = rel_w_in.stride(1) == 1 ? rel_w_in : rel_w_in.contiguous();
  const int64_t hk = rel_h.size(1), wk = rel_w.size(1);
  float* const s = scores.data_ptr<float>();
  const float* const rh = rel_h.data_ptr<float>();
  const float* const rw = rel_w.data_ptr<float>();
  const int64_t s_stride = scores.stride(0), rh_stride = rel_h.stride(0), rw_stride = rel_w.stride(0);
  at::parallel_for(0, scores.size(0), 8, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      float* row = s + n * s_stride;
      const float* w = rw + n * rw_stride;
      for (int64_t i = 0; i < hk; ++i, row += wk) {
        const float h = rh[n * rh_stride + i];
        for (int64_t j = 0; j < wk; ++j) row[j] = (row[j] + h) + w[j];
      }
    }
  });
}

// Attention over at most kFewKeys keys (the two-way transformer's image-to-token direction:
// 4096 image queries, 7 prompt tokens), fused: for ATen's path the scores are rows of 7, whose
// softmax costs more than the products. Both versions compute each row alike: the scores as
// fused multiply-adds over d in order, softmax by exp_avx512's scheme with the sum taken over
// the keys in order, the output as fused multiply-adds over the keys in order.
constexpr int64_t kFewKeys = 16;

struct FewKeysViews {
  const float *q, *k, *v;
  float* out;
  int64_t n, m, d, dv, q_stride, k_stride, v_stride, out_stride;
  float query_scale;  // applied to q first (ScoreScaling::kScaleQueries), else 1
  float divisor;      // the scores are divided by it (kDivideScores), else 1
};

void few_keys_row_generic(const FewKeysViews& a, int64_t row) {
  const float* q = a.q + row * a.q_stride;
  float p[kFewKeys];
  float top = -INFINITY;
  for (int64_t j = 0; j < a.m; ++j) {
    const float* k = a.k + j * a.k_stride;
    float s = 0.0f;
    for (int64_t c = 0; c < a.d; ++c) s = std::fma(q[c] * a.query_scale, k[c], s);
    p[j] = s / a.divisor;
    top = std::max(top, p[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < a.m; ++j) sum += (p[j] = exp_scalar(p[j] - top));
  for (int64_t j = 0; j < a.m; ++j) p[j] /= sum;
  float* out = a.out + row * a.out_stride;
  for (int64_t c = 0; c < a.dv; ++c) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.m; ++j) acc = std::fma(p[j], a.v[j * a.v_stride + c], acc);
    out[c] = acc;
  }
}

// Sixteen rows at a time, one per lane.
__attribute__((target("avx512f"))) void few_keys_rows_avx512(const FewKeysViews& a, int64_t row0) {
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(int32_t(a.q_stride)));
  const float* q = a.q + row0 * a.q_stride;
  __m512 p[kFewKeys];
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < a.m; ++j) {
    const float* k = a.k + j * a.k_stride;
    __m512 s = _mm512_setzero_ps();
    for (int64_t c = 0; c < a.d; ++c) {
      const __m512 qc = _mm512_mul_ps(_mm512_i32gather_ps(rows, q + c, 4), _mm512_set1_ps(a.query_scale));
      s = _mm512_fmadd_ps(qc, _mm512_set1_ps(k[c]), s);
    }
    p[j] = _mm512_div_ps(s, _mm512_set1_ps(a.divisor));
    top = _mm512_max_ps(top, p[j]);
  }
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < a.m; ++j) sum = _mm512_add_ps(sum, p[j] = exp_avx512(_mm512_sub_ps(p[j], top)));
  alignas(64) float probs[kFewKeys][16];
  for (int64_t j = 0; j < a.m; ++j) _mm512_store_ps(probs[j], _mm512_div_ps(p[j], sum));
  for (int64_t r = 0; r < 16; ++r) {
    float* out = a.out + (row0 + r) * a.out_stride;
    for (int64_t c0 = 0; c0 < a.dv; c0 += 16) {
      const __mmask16 lanes = a.dv - c0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (a.dv - c0)) - 1);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t j = 0; j < a.m; ++j)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(probs[j][r]), _mm512_maskz_loadu_ps(lanes, a.v + j * a.v_stride + c0), acc);
      _mm512_mask_storeu_ps(out + c0, lanes, acc);
    }
  }
}

bool few_keys_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                        ScoreScaling scaling) {
  const int64_t m = k.size(0);
  if (m == 0 || m > kFewKeys || q.stride(1) != 1 || k.stride(1) != 1 || v.stride(1) != 1 || out.stride(1) != 1 ||
      q.stride(0) * 16 > INT32_MAX)
    return false;
  const int64_t d = q.size(1);
  FewKeysViews a{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), out.data_ptr<float>(),
                 q.size(0), m, d, v.size(1), q.stride(0), k.stride(0), v.stride(0), out.stride(0),
                 scaling == ScoreScaling::kScaleQueries ? float(query_scale(d)) : 1.0f,
                 scaling == ScoreScaling::kDivideScores ? float(score_divisor(d)) : 1.0f};
  int64_t row = 0;
  if (has_avx512())
    for (; row + 16 <= a.n; row += 16) few_keys_rows_avx512(a, row);
  for (; row < a.n; ++row) few_keys_row_generic(a, row);
  return true;
}

}  // namespace

void attention_into(const at::Tensor& q_in, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                    ScoreScaling scaling, const at::Tensor& rel_h, const at::Tensor& rel_w,
                    const ProbabilityHook* probs_hook) {
  const int64_t n = q_in.size(0), m = k.size(0), d = q_in.size(1);
  if (!rel_h.defined() && !probs_hook && few_keys_attention(q_in, k, v, out, scaling)) return;
  at::Tensor q = q_in;
  if (scaling == ScoreScaling::kScaleQueries) {
    q = thread_scratch_tensor(Scratch::kAttentionQueries, n, d);
    at::mul_out(q, q_in, at::native::wrapped_scalar_tensor(query_scale(d)));  // as q_in * double
  }
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n, kChunkScores / std::max<int64_t>(m, 1)));
  const at::Tensor scores = thread_scratch_tensor(Scratch::kAttentionScores, chunk, m);
  const at::Tensor probs = thread_scratch_tensor(Scratch::kAttentionProbs, chunk, m);
  const at::Tensor kt = k.t();
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    at::Tensor s = scores.narrow(0, 0, rows);
    at::Tensor p = probs.narrow(0, 0, rows);
    matmul_into(q.narrow(0, r0, rows), kt, s);
    if (scaling == ScoreScaling::kDivideScores) s.div_(score_divisor(d));
    if (rel_h.defined()) add_rel_pos(s, rel_h.narrow(0, r0, rows), rel_w.narrow(0, r0, rows));
    at::_softmax_out(p, s, -1, false);
    matmul_into(probs_hook ? probs_hook->transform(p, v) : p, v, out.narrow(0, r0, rows));
  }
}

at::Tensor multi_head_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t num_heads,
                                ScoreScaling scaling, const at::Tensor& rel_h, const at::Tensor& rel_w,
                                const ProbabilityHook& probs_hook) {
  const bool grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (grad || (probs_hook && !probs_hook.elementwise) || q.scalar_type() != at::kFloat || !q.is_cpu())
    return attention_autograd(q, k, v, num_heads, scaling, rel_h, rel_w, probs_hook);
  at::Tensor out = at::empty({q.size(0), q.size(1), v.size(2)}, q.options());
  const at::Tensor qh = split_heads(q, num_heads), kh = split_heads(k, num_heads), vh = split_heads(v, num_heads);
  const at::Tensor oh = split_heads(out, num_heads);
  const auto one_head = [&](int64_t job) {
    const int64_t b = job / num_heads, h = job % num_heads;
    attention_into(qh[b][h], kh[b][h], vh[b][h], oh[b][h], scaling, rel_h.defined() ? rel_h[b][h] : at::Tensor(),
                   rel_w.defined() ? rel_w[b][h] : at::Tensor(), probs_hook ? &probs_hook : nullptr);
  };
  const int64_t jobs = q.size(0) * num_heads;
  if (probs_hook && !probs_hook.concurrent) {
    for (int64_t job = 0; job < jobs; ++job) one_head(job);
  } else {
    // One head per thread, each op inside single-threaded: a head's chunk stays in its core's
    // cache, and small windowed heads do not pay a thread fork per op.
    at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) one_head(job);
    });
  }
  return out;
}

}  // namespace ptq4sam::kernels
