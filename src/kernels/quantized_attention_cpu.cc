// The integer attention's passes around oneDNN's u8 x s8 products: per head, codes of q, k and
// v; per chunk of query rows, Q K^T, one fused pass per score row (zero-point terms, scale,
// relative positions, softmax, the probabilities' quantizer), then P V.
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/exp.h"
#include "kernels/int_matmul.h"
#include "kernels/load_avx512.h"
#include "kernels/log_grid.h"
#include "kernels/log_planes.h"
#include "kernels/matmul.h"
#include "kernels/quantize_step.h"
#include "kernels/quantize_step_avx512.h"
#include "kernels/quantized_attention.h"
#include "kernels/relative_position.h"
#include "kernels/thread_scratch.h"
#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

using dnnl::memory;

// Scores per chunk of query rows (128 rows of a global block): a product's K^T or V, copied
// into oneDNN's layout on each call, then serves more rows, while 2 MB of int32 scores still
// stay in L2/L3; AGQ's planes share it among themselves. bench_image_encoder shows the effect
// of changing it.
constexpr int64_t kChunkScores = 1 << 19;

// Rows of a matrix (unit column stride) of floats or codes: row r at base + r * stride, or,
// given an index, at base + index[r] * stride, and at `pad` where index[r] < 0 (a window's
// positions past the grid).
template <typename T>
struct RowsOf {
  const T* base = nullptr;
  int64_t stride = 0;
  const int64_t* index = nullptr;
  const T* pad = nullptr;
  const T* operator()(int64_t r) const {
    if (!index) return base + r * stride;
    return index[r] < 0 ? pad : base + index[r] * stride;
  }
};
using Rows = RowsOf<float>;
using CodeRows = RowsOf<uint8_t>;

// Output rows, likewise (no padding).
struct OutRows {
  float* base = nullptr;
  int64_t stride = 0;
  const int64_t* index = nullptr;
  float* operator()(int64_t r) const { return base + (index ? index[r] : r) * stride; }
};

// Codes (count x d, contiguous) of `count` rows: u8, or the s8 codes of the weights side where
// `weights_side`; their row sums where `sums` is given.
void quantize_rows(const Rows& rows, int64_t count, int64_t d, const ActivationQuantization& q, bool weights_side,
                   uint8_t* codes, int32_t* sums) {
  const int32_t shift = int_matmul::u8_shift(q) - (weights_side ? 128 : 0);
  for (int64_t r = 0; r < count; ++r) {
    const int32_t sum = int_matmul::quantize_row(rows(r), codes + r * d, d, q, shift);
    if (sums) sums[r] = sum;
  }
}

// SAM's heads have 64 channels: one vector a row, its sum by sum-of-absolute-differences (s8
// codes moved into u8 by flipping their sign bit, 64 * 128 taken off after).
__attribute__((target("avx512f,avx512bw"))) void gather_rows64_avx512(const CodeRows& rows, int64_t count,
                                                                     bool weights_side, uint8_t* codes,
                                                                     int32_t* sums) {
  const __m512i flip = _mm512_set1_epi8(weights_side ? char(0x80) : 0);
  const int32_t offset = weights_side ? 64 * 128 : 0;
  for (int64_t r = 0; r < count; ++r) {
    if (r + 8 < count) _mm_prefetch(reinterpret_cast<const char*>(rows(r + 8)), _MM_HINT_T0);
    const __m512i row = _mm512_loadu_si512(rows(r));
    _mm512_storeu_si512(codes + r * 64, row);
    if (sums)
      sums[r] = int32_t(_mm512_reduce_add_epi64(_mm512_sad_epu8(_mm512_xor_si512(row, flip), _mm512_setzero_si512()))) -
                offset;
  }
}

// The same from codes already made (qkv_code_blocks): copied together, with their sums as u8,
// or as s8 on the weights side.
void gather_rows(const CodeRows& rows, int64_t count, int64_t d, bool weights_side, uint8_t* codes, int32_t* sums) {
  if (d == 64 && has_avx512()) return gather_rows64_avx512(rows, count, weights_side, codes, sums);
  for (int64_t r = 0; r < count; ++r) {
    const uint8_t* row = rows(r);
    std::copy(row, row + d, codes + r * d);
    if (!sums) continue;
    int32_t sum = 0;
    if (weights_side)
      for (int64_t c = 0; c < d; ++c) sum += int8_t(row[c]);
    else
      for (int64_t c = 0; c < d; ++c) sum += row[c];
    sums[r] = sum;
  }
}

// exp(x[i] - max) in place, and their sum. Two vectors per step, summed apart: the exponential's
// long chain of dependent operations then overlaps.
__attribute__((target("avx512f"))) float exp_shifted_avx512(float* x, int64_t n, float max) {
  const __m512 shift = _mm512_set1_ps(max);
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 a = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), shift));
    const __m512 b = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), shift));
    _mm512_storeu_ps(x + i, a);
    _mm512_storeu_ps(x + i + 16, b);
    even = _mm512_add_ps(even, a);
    odd = _mm512_add_ps(odd, b);
  }
  for (; i < n; i += 16) {
    const __mmask16 lanes = lanes16(i, n);
    const __m512 e = exp_avx512(_mm512_sub_ps(load16(x + i, lanes), shift));
    _mm512_mask_storeu_ps(x + i, lanes, e);
    even = _mm512_mask_add_ps(even, lanes, even, e);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

// exp_shifted_avx512 lane by lane: its exponential and its order of sums, so the same sum.
float exp_shifted_generic(float* x, int64_t n, float max) {
  float even[16] = {}, odd[16] = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 16; ++l) {
      even[l] += (x[i + l] = exp_scalar(x[i + l] - max));
      odd[l] += (x[i + 16 + l] = exp_scalar(x[i + 16 + l] - max));
    }
  for (; i < n; i += 16)
    for (int l = 0; l < 16 && i + l < n; ++l) even[l] += (x[i + l] = exp_scalar(x[i + l] - max));
  float lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = even[l] + odd[l];
  return reduce_add16(lanes);
}

// One row of scores from its s32 products: float((acc + row_term) + col_term) * scale, then
// ((score + rel_h[i]) + rel_w[j]) at m = i * wk + j as the official two broadcast adds (hk = 1
// and wk = m when there are no relative positions). Returns the row's max. By hand for AVX-512:
// GCC vectorizes neither the float max nor, with rel_w rows of 14, the inner loop.
__attribute__((target("avx512f"))) float score_row_avx512(const int32_t* acc, float* out, int64_t hk, int64_t wk,
                                                          int32_t row_term, const int32_t* col_term, float scale,
                                                          const float* rel_h, const float* rel_w) {
  const __m512i row = _mm512_set1_epi32(row_term);
  const __m512 factor = _mm512_set1_ps(scale);
  __m512 max = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < hk; ++i) {
    const int64_t base = i * wk;
    const __m512 h = _mm512_set1_ps(rel_h ? rel_h[i] : 0.0f);
    for (int64_t j = 0; j < wk; j += 16) {
      const __mmask16 lanes = lanes16(j, wk);
      const __m512i sum =
          _mm512_add_epi32(_mm512_add_epi32(load16(acc + base + j, lanes), row), load16(col_term + base + j, lanes));
      __m512 score = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), factor);
      if (rel_h) score = _mm512_add_ps(_mm512_add_ps(score, h), load16(rel_w + j, lanes));
      _mm512_mask_storeu_ps(out + base + j, lanes, score);
      max = _mm512_mask_max_ps(max, lanes, max, score);
    }
  }
  return _mm512_reduce_max_ps(max);
}

__attribute__((optimize("fp-contract=off"))) float score_row_generic(const int32_t* acc, float* out, int64_t hk,
                                                                   int64_t wk, int32_t row_term,
                                                                   const int32_t* col_term, float scale,
                                                                   const float* rel_h, const float* rel_w) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < hk; ++i)
    for (int64_t j = 0; j < wk; ++j) {
      float score = float(acc[i * wk + j] + row_term + col_term[i * wk + j]) * scale;
      if (rel_h) score = (score + rel_h[i]) + rel_w[j];
      out[i * wk + j] = score;
      max = std::max(max, score);
    }
  return max;
}

float score_row(const int32_t* acc, float* out, int64_t hk, int64_t wk, int32_t row_term, const int32_t* col_term,
                float scale, const float* rel_h, const float* rel_w) {
  return (has_avx512() ? score_row_avx512 : score_row_generic)(acc, out, hk, wk, row_term, col_term, scale, rel_h, rel_w);
}

// u8 codes of the probabilities p * inv_sum and their sum: quantize_step's rounding and
// clamps, with the division by the scale folded into the normalisation (`factor` = inv_sum /
// scale), one more float32 rounding among those the exponential already brings.
// In integers after the rounding (cvtps rounds half to even, as quantize_step): the same codes.
__attribute__((target("avx512f,avx512bw,avx512vl"))) int32_t prob_codes_avx512(const float* p, uint8_t* codes,
                                                                              int64_t n, float factor,
                                                                              float zero_point, float lo, float hi,
                                                                              int32_t shift) {
  const __m512 f = _mm512_set1_ps(factor), limit = _mm512_set1_ps(4194304.0f);
  const CodeGrid16 grid = code_grid16(zero_point, lo, hi, shift);
  __m512i sum = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = lanes16(i, n);
    // Probabilities are >= 0: only the upper clamp of quantize_step can bite.
    const __m512 v = _mm512_min_ps(_mm512_mul_ps(load16(p + i, lanes), f), limit);
    sum = _mm512_add_epi32(sum, store_codes16(v, lanes, grid, codes + i));
  }
  return _mm512_reduce_add_epi32(sum);
}

__attribute__((optimize("no-trapping-math"))) int32_t prob_codes_generic(const float* p, uint8_t* codes, int64_t n,
                                                                        float factor, float zero_point, float lo,
                                                                        float hi, int32_t shift) {
  int32_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t code = int32_t(quantize_step(p[i] * factor, 1.0f, zero_point, lo, hi)) + shift;
    codes[i] = uint8_t(code);
    sum += code;
  }
  return sum;
}

void scale_row(float* p, int64_t n, float factor) {
  for (int64_t i = 0; i < n; ++i) p[i] *= factor;
}

// One product's output rows: float((acc + row_term) + col_term) * scale into a strided matrix.
static inline __attribute__((always_inline)) void dequantize_rows_body(
    const int32_t* acc, int64_t rows, int64_t n, const int32_t* row_terms, const int32_t* col_term, float scale,
    float* out, int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) out[r * out_stride + j] = float(acc[r * n + j] + row_terms[r] + col_term[j]) * scale;
}
PTQ4SAM_DISPATCH_BY_ISA(void, dequantize_rows, (const int32_t* acc, int64_t rows, int64_t n, const int32_t* row_terms, const int32_t* col_term, float scale, float* out, int64_t out_stride), (acc, rows, n, row_terms, col_term, scale, out, out_stride))

float exp_shifted(float* x, int64_t n, float max) {
  return (has_avx512() ? exp_shifted_avx512 : exp_shifted_generic)(x, n, max);
}

int32_t prob_codes(const float* p, uint8_t* codes, int64_t n, float factor, float zero_point, float lo, float hi,
                   int32_t shift) {
  return (has_avx512() ? prob_codes_avx512 : prob_codes_generic)(p, codes, n, factor, zero_point, lo, hi, shift);
}

// A head's V as the weights side of P V: its s8 codes (m x dv) and their zero point.
struct ValueCodes {
  const uint8_t* codes;
  int64_t m, dv;
  int32_t zero_point;
};

// How a head's probabilities meet V: on affine codes, on AGQ's log planes, or in float32 on the
// log quantizer's values. Made once per head; then per chunk of query rows, row() takes each
// row's exponentials and product() writes the chunk's output rows.
class ProbabilityProduct {
 public:
  virtual ~ProbabilityProduct() = default;
  // Row r of a chunk of `rows`: the m unnormalised exponentials p (overwritten) and 1 / their sum.
  virtual void row(float* p, float inv_sum, int64_t r, int64_t rows) = 0;
  // out (rows x dv, row stride out_stride) = P V over the chunk's rows.
  virtual void product(int64_t rows, float* out, int64_t out_stride) = 0;
};

// P on the affine softmax grid: u8 codes, one exact product, zero-point terms, one scale.
class AffineProduct final : public ProbabilityProduct {
 public:
  AffineProduct(const ActivationQuantization& probs, float v_scale, const ValueCodes& v, int64_t chunk)
      : probs_(probs), v_(v) {
    column_terms_ = thread_scratch<int32_t>(Scratch::kValueColumnTerms, v.dv);
    std::fill(column_terms_, column_terms_ + v.dv, 0);
    for (int64_t r = 0; r < v.m; ++r)
      for (int64_t j = 0; j < v.dv; ++j) column_terms_[j] += int8_t(v.codes[r * v.dv + j]);
    const int32_t zp = probs.zero_point + int_matmul::u8_shift(probs);
    for (int64_t j = 0; j < v.dv; ++j) column_terms_[j] = int_matmul::column_term(zp, v.zero_point, v.m, column_terms_[j]);
    scale_ = probs.scale * v_scale;
    codes_ = thread_scratch<uint8_t>(Scratch::kProbCodes, chunk * v.m);
    row_terms_ = thread_scratch<int32_t>(Scratch::kRowTerms, chunk);
    acc_ = thread_scratch<int32_t>(Scratch::kOutput, chunk * v.dv);
  }
  void row(float* p, float inv_sum, int64_t r, int64_t) override {
    const int32_t sum = prob_codes(p, codes_ + r * v_.m, v_.m, inv_sum / probs_.scale, float(probs_.zero_point),
                                   float(probs_.quant_min), float(probs_.quant_max), int_matmul::u8_shift(probs_));
    row_terms_[r] = -v_.zero_point * sum;
  }
  void product(int64_t rows, float* out, int64_t out_stride) override {
    int_matmul::run_exact(rows, codes_, v_.m, v_.codes, v_.dv, v_.dv, 1, acc_);
    dequantize_rows(acc_, rows, v_.dv, row_terms_, column_terms_, scale_, out, out_stride);
  }

 private:
  ActivationQuantization probs_;
  ValueCodes v_;
  float scale_ = 0.0f;
  uint8_t* codes_;
  int32_t *row_terms_, *column_terms_, *acc_;
};

// P on AGQ's log grid as integer planes (kernels/log_planes.h): every plane's rows in one exact
// product, then their sum weighted by the planes' factors.
class LogPlaneProduct final : public ProbabilityProduct {
 public:
  LogPlaneProduct(const LogProbabilities& log, const LogPlanes& planes, float v_scale, const ValueCodes& v, int64_t chunk)
      : log_(log), planes_(planes), v_(v) {
    for (int32_t plane = 0; plane < planes.count; ++plane)
      factors_[plane] = float(planes.factors[size_t(plane)] * v_scale);
    codes_ = thread_scratch<uint8_t>(Scratch::kProbCodes, planes.count * chunk * v.m);
    row_terms_ = thread_scratch<int32_t>(Scratch::kRowTerms, planes.count * chunk);
    acc_ = thread_scratch<int32_t>(Scratch::kOutput, planes.count * chunk * v.dv);
    if (!has_avx512()) log_codes_ = thread_scratch<int32_t>(Scratch::kLogCodes, v.m);
  }
  void row(float* p, float inv_sum, int64_t r, int64_t rows) override {
    int32_t sums[4];
    uint8_t* out = codes_ + r * v_.m;
    if (has_avx512()) {
      log_planes_avx512(p, v_.m, inv_sum, planes_, out, rows * v_.m, sums);
    } else {
      scale_row(p, v_.m, inv_sum);
      log_.codes(p, log_codes_, v_.m);
      log_planes_generic(log_codes_, v_.m, planes_, out, rows * v_.m, sums);
    }
    for (int32_t plane = 0; plane < planes_.count; ++plane) row_terms_[plane * rows + r] = -v_.zero_point * sums[plane];
  }
  void product(int64_t rows, float* out, int64_t out_stride) override {
    int_matmul::run_exact(planes_.count * rows, codes_, v_.m, v_.codes, v_.dv, v_.dv, 1, acc_);
    combine_planes(acc_, factors_, planes_.count, rows, v_.dv, row_terms_, out, out_stride);
  }

 private:
  const LogProbabilities& log_;
  const LogPlanes& planes_;
  ValueCodes v_;
  float factors_[4] = {};
  uint8_t* codes_;
  int32_t *row_terms_, *acc_, *log_codes_ = nullptr;
};

// P on a log grid that planes do not serve: the quantizer's values, in float32.
class LogFloatProduct final : public ProbabilityProduct {
 public:
  LogFloatProduct(const LogProbabilities& log, float v_scale, const ValueCodes& v, int64_t chunk) : log_(log), v_(v) {
    values_ = thread_scratch<float>(Scratch::kValues, v.m * v.dv);
    for (int64_t i = 0; i < v.m * v.dv; ++i)
      values_[i] = float(int32_t(int8_t(v.codes[i])) - v.zero_point) * v_scale;
    probs_ = thread_scratch<float>(Scratch::kProbs, chunk * v.m);
    log_codes_ = thread_scratch<int32_t>(Scratch::kLogCodes, v.m);
  }
  void row(float* p, float inv_sum, int64_t r, int64_t) override {
    scale_row(p, v_.m, inv_sum);
    log_.codes(p, log_codes_, v_.m);
    const float* table = log_.values.data();
    for (int64_t i = 0; i < v_.m; ++i) probs_[r * v_.m + i] = table[log_codes_[i]];
  }
  void product(int64_t rows, float* out, int64_t out_stride) override {
    const auto f32 = at::TensorOptions().dtype(at::kFloat);
    matmul_into(at::from_blob(probs_, {rows, v_.m}, f32), at::from_blob(values_, {v_.m, v_.dv}, f32),
                at::from_blob(out, {rows, v_.dv}, {out_stride, 1}, f32));
  }

 private:
  const LogProbabilities& log_;
  ValueCodes v_;
  float *values_, *probs_;
  int32_t* log_codes_;
};

// Query rows per chunk: the scores, and the probabilities' codes of every plane, stay within
// kChunkScores.
int64_t chunk_rows(int64_t n, int64_t m, int64_t planes_per_row) {
  return std::max<int64_t>(1, std::min<int64_t>(n, kChunkScores / planes_per_row / std::max<int64_t>(m, 1)));
}

std::unique_ptr<ProbabilityProduct> probability_product(const IntegerAttention& quant, const LogPlanes& planes,
                                                        const ValueCodes& v, int64_t chunk) {
  if (!quant.log_probs) return std::make_unique<AffineProduct>(quant.probs, quant.v.scale, v, chunk);
  if (planes.count > 0) return std::make_unique<LogPlaneProduct>(*quant.log_probs, planes, quant.v.scale, v, chunk);
  return std::make_unique<LogFloatProduct>(*quant.log_probs, quant.v.scale, v, chunk);
}

// The operands of one head: n query rows (a q_h x q_w grid where there are relative
// positions), m key and value rows, as floats or as codes, and where each query's output row
// goes.
template <typename T>
struct HeadOperands {
  RowsOf<T> q, k, v;
  OutRows out;
  int64_t n, m, q_h, q_w;
};

// A head's codes from its rows: quantized from floats, or gathered from codes already made.
void head_codes(const Rows& rows, int64_t count, int64_t d, const ActivationQuantization& q, bool weights_side,
                uint8_t* codes, int32_t* sums) {
  quantize_rows(rows, count, d, q, weights_side, codes, sums);
}
void head_codes(const CodeRows& rows, int64_t count, int64_t d, const ActivationQuantization&, bool weights_side,
                uint8_t* codes, int32_t* sums) {
  gather_rows(rows, count, d, weights_side, codes, sums);
}

template <typename T>
void one_head(const HeadOperands<T>& op, int64_t d, int64_t dv, const IntegerAttention& quant, const LogPlanes& planes,
              const RelativeTables& rel) {
  const int64_t n = op.n, m = op.m;
  // Codes of the whole head: q (u8), k and v (s8, the weights side), with their sums.
  uint8_t* q_codes = thread_scratch<uint8_t>(Scratch::kQueryCodes, n * d);
  uint8_t* k_codes = thread_scratch<uint8_t>(Scratch::kKeyCodes, m * d);
  uint8_t* v_codes = thread_scratch<uint8_t>(Scratch::kValueCodes, m * dv);
  int32_t* q_sums = thread_scratch<int32_t>(Scratch::kQuerySums, n);
  int32_t* k_sums = thread_scratch<int32_t>(Scratch::kKeySums, m);
  head_codes(op.q, n, d, quant.q, false, q_codes, q_sums);
  head_codes(op.k, m, d, quant.k, true, k_codes, k_sums);
  head_codes(op.v, m, dv, quant.v, true, v_codes, nullptr);
  const int32_t zq = quant.q.zero_point + int_matmul::u8_shift(quant.q);
  const int32_t zk = quant.k.zero_point + int_matmul::u8_shift(quant.k) - 128;
  const int32_t zv = quant.v.zero_point + int_matmul::u8_shift(quant.v) - 128;
  // Keys are the columns of Q K^T: acc - zk sum(q) + their column term.
  int32_t* col_k = thread_scratch<int32_t>(Scratch::kKeyColumnTerms, m);
  for (int64_t j = 0; j < m; ++j) col_k[j] = int_matmul::column_term(zq, zk, d, k_sums[j]);
  // The relative positions on the fake quantizer's q values: (code - zq) * scale, exactly.
  float *rel_h = nullptr, *rel_w = nullptr;
  if (rel.defined()) {
    float* q_values = thread_scratch<float>(Scratch::kQueryValues, n * d);
    for (int64_t i = 0; i < n * d; ++i) q_values[i] = float(int32_t(q_codes[i]) - zq) * quant.q.scale;
    rel_h = thread_scratch<float>(Scratch::kRelH, n * rel.pad_h);
    rel_w = thread_scratch<float>(Scratch::kRelW, n * rel.pad_w);
    relative_terms(q_values, d, rel, op.q_h, op.q_w, rel_h, rel_w);
  }
  const float qk_scale = float(double(quant.q.scale * quant.k.scale) * std::pow(double(d), -0.5));

  const int64_t chunk = chunk_rows(n, m, quant.log_probs && planes.count > 0 ? planes.count : 1);
  const auto pv = probability_product(quant, planes, ValueCodes{v_codes, m, dv, zv}, chunk);
  int32_t* scores = thread_scratch<int32_t>(Scratch::kScores, chunk * m);
  float* row_probs = thread_scratch<float>(Scratch::kScoreRow, m);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    int_matmul::run_exact(rows, q_codes + r0 * d, d, k_codes, m, 1, d, scores);  // K^T: (d x m) over k's rows
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = r0 + r;
      const float max = score_row(scores + r * m, row_probs, rel_h ? rel.k_h : 1, rel_h ? rel.k_w : m,
                                  -zk * q_sums[row], col_k, qk_scale, rel_h ? rel_h + row * rel.pad_h : nullptr,
                                  rel_w ? rel_w + row * rel.pad_w : nullptr);
      pv->row(row_probs, 1.0f / exp_shifted(row_probs, m, max), r, rows);
    }
    // Output rows in place where they lie at one stride, else gathered here and then scattered.
    float* out = op.out.index ? thread_scratch<float>(Scratch::kOutputRows, rows * dv) : op.out(r0);
    pv->product(rows, out, op.out.index ? dv : op.out.stride);
    if (op.out.index) {
      // Of known length where heads have 64 channels: inlined, not a memmove call per row.
      if (dv == 64)
        for (int64_t r = 0; r < rows; ++r) std::memcpy(op.out(r0 + r), out + r * dv, 64 * sizeof(float));
      else
        for (int64_t r = 0; r < rows; ++r) std::copy(out + r * dv, out + (r + 1) * dv, op.out(r0 + r));
    }
  }
}

void check_keys(int64_t m) {
  // The P V sums' terms stay inside int32 (|codes| <= 255 and 128, four terms).
  if (m > (int64_t(1) << 14)) throw Error("quantized attention", "more than 2^14 keys overflow int32 sums");
}

}  // namespace

std::vector<CodeBlock> qkv_code_blocks(const IntegerAttention& quant) {
  return {CodeBlock{quant.q, int_matmul::u8_shift(quant.q)}, CodeBlock{quant.k, int_matmul::u8_shift(quant.k) - 128},
          CodeBlock{quant.v, int_matmul::u8_shift(quant.v) - 128}};
}

namespace {

// Whether the operands are codes (all uint8) or values (float32 after .to); throws when mixed.
bool operands_on_codes(std::initializer_list<const at::Tensor*> operands) {
  size_t codes = 0;
  for (const at::Tensor* t : operands) codes += t->defined() && t->scalar_type() == at::kByte;
  size_t defined = 0;
  for (const at::Tensor* t : operands) defined += t->defined();
  if (codes != 0 && codes != defined) throw Error("quantized attention", "operands mix codes and values");
  return codes != 0;
}

}  // namespace

at::Tensor quantized_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                               int64_t num_heads, const IntegerAttention& quant, const at::Tensor& rel_pos_h,
                               const at::Tensor& rel_pos_w) {
  RECORD_FUNCTION("ptq4sam::quantized_attention", std::vector<c10::IValue>());
  const bool on_codes = operands_on_codes({&q_in, &k_in, &v_in});
  const auto unit_columns = [&](const at::Tensor& t) {
    const at::Tensor typed = on_codes ? t : t.to(at::kFloat);
    return typed.stride(2) == 1 ? typed : typed.contiguous();
  };
  const at::Tensor q = unit_columns(q_in), k = unit_columns(k_in), v = unit_columns(v_in);
  const int64_t batch = q.size(0), n = q.size(1), m = k.size(1);
  const int64_t d = q.size(2) / num_heads, dv = v.size(2) / num_heads;
  check_keys(m);
  const RelativeTables rel = relative_tables(rel_pos_h, rel_pos_w, d);
  if (rel.defined() && (rel.q_h * rel.q_w != n || rel.k_h * rel.k_w != m))
    throw Error("quantized attention", "relative positions do not cover the queries and keys");
  at::Tensor out = at::empty({batch, n, v.size(2)}, at::kFloat);
  const LogPlanes planes = quant.log_probs ? log_planes(*quant.log_probs) : LogPlanes{};
  const int64_t jobs = batch * num_heads;
  // One head per thread, each product inside single-threaded: a head's codes and chunk stay in
  // its core's cache.
  const auto run_heads = [&](auto element) {
    using T = decltype(element);
    at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t b = job / num_heads, h = job % num_heads;
        HeadOperands<T> op;
        op.q = {q.data_ptr<T>() + b * q.stride(0) + h * d, q.stride(1)};
        op.k = {k.data_ptr<T>() + b * k.stride(0) + h * d, k.stride(1)};
        op.v = {v.data_ptr<T>() + b * v.stride(0) + h * dv, v.stride(1)};
        op.out = {out.data_ptr<float>() + b * out.stride(0) + h * dv, out.stride(1)};
        op.n = n, op.m = m, op.q_h = rel.q_h, op.q_w = rel.q_w;
        one_head(op, d, dv, quant, planes, rel);
      }
    });
  };
  on_codes ? run_heads(uint8_t{}) : run_heads(float{});
  return out;
}

at::Tensor quantized_window_attention(const at::Tensor& qkv_in, const at::Tensor& padding_in, int64_t batch,
                                      int64_t height, int64_t width, int64_t window, int64_t num_heads,
                                      const IntegerAttention& quant, const at::Tensor& rel_pos_h,
                                      const at::Tensor& rel_pos_w) {
  RECORD_FUNCTION("ptq4sam::quantized_window_attention", std::vector<c10::IValue>());
  const int64_t tokens = batch * height * width;
  if (window <= 0 || qkv_in.dim() != 2 || qkv_in.size(0) != tokens || qkv_in.size(1) % (3 * num_heads) != 0)
    throw Error("quantized attention", "fused q, k, v do not match the token grid");
  const int64_t c = qkv_in.size(1) / 3, d = c / num_heads;
  const int64_t windows_h = (height + window - 1) / window, windows_w = (width + window - 1) / window;
  const bool padded = windows_h * window != height || windows_w * window != width;
  if (padded && (!padding_in.defined() || padding_in.numel() != 3 * c))
    throw Error("quantized attention", "windows past the grid need the padding token's q, k, v");
  check_keys(window * window);
  const RelativeTables rel = relative_tables(rel_pos_h, rel_pos_w, d);
  if (rel.defined() && (rel.q_h != window || rel.k_h != window || rel.q_w != window || rel.k_w != window))
    throw Error("quantized attention", "relative positions do not cover the windows");
  const bool on_codes = operands_on_codes({&qkv_in, padded ? &padding_in : &qkv_in});
  const auto typed = [&](const at::Tensor& t) { return (on_codes ? t : t.to(at::kFloat)).contiguous(); };
  const at::Tensor qkv = typed(qkv_in);
  const at::Tensor padding = padded ? typed(padding_in).view({-1}) : at::Tensor();
  const LogPlanes planes = quant.log_probs ? log_planes(*quant.log_probs) : LogPlanes{};

  // Per window, window_partition's order: its ws x ws positions (token, or -1 past the grid)
  // as keys, and its tokens inside the grid, a q_h x q_w corner, as queries.
  struct Window {
    std::vector<int64_t> keys, queries;
    int64_t q_h = 0, q_w = 0;
  };
  std::vector<Window> grid(size_t(batch * windows_h * windows_w));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t wy = 0; wy < windows_h; ++wy)
      for (int64_t wx = 0; wx < windows_w; ++wx) {
        Window& win = grid[size_t((b * windows_h + wy) * windows_w + wx)];
        win.q_h = std::min(window, height - wy * window);
        win.q_w = std::min(window, width - wx * window);
        for (int64_t y = 0; y < window; ++y)
          for (int64_t x = 0; x < window; ++x) {
            const int64_t gy = wy * window + y, gx = wx * window + x;
            const int64_t token = gy < height && gx < width ? (b * height + gy) * width + gx : -1;
            win.keys.push_back(token);
            if (token >= 0) win.queries.push_back(token);
          }
      }

  at::Tensor out = at::empty({tokens, c}, at::kFloat);
  const int64_t stride = 3 * c;
  const int64_t jobs = int64_t(grid.size()) * num_heads;
  const auto run_heads = [&](auto element) {
    using T = decltype(element);
    const T* base = qkv.data_ptr<T>();
    const T* pad = padded ? padding.data_ptr<T>() : nullptr;
    at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const Window& win = grid[size_t(job / num_heads)];
        const int64_t h = job % num_heads;
        const auto rows_from = [&](const T* padding_row, int64_t column, const std::vector<int64_t>& index) {
          return RowsOf<T>{base + column, stride, index.data(), padding_row ? padding_row + column : nullptr};
        };
        HeadOperands<T> op;
        op.q = rows_from(nullptr, h * d, win.queries);
        op.k = rows_from(pad, c + h * d, win.keys);
        op.v = rows_from(pad, 2 * c + h * d, win.keys);
        op.out = {out.data_ptr<float>() + h * d, c, win.queries.data()};
        op.n = int64_t(win.queries.size()), op.m = window * window, op.q_h = win.q_h, op.q_w = win.q_w;
        one_head(op, d, d, quant, planes, rel);
      }
    });
  };
  on_codes ? run_heads(uint8_t{}) : run_heads(float{});
  return out;
}

}  // namespace ptq4sam::kernels
