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
#include <type_traits>
#include <vector>

#include "kernels/exp.h"
#include "kernels/int_matmul.h"
#include "kernels/load_avx512.h"
#include "kernels/log_grid.h"
#include "kernels/quantize_step.h"
#include "kernels/quantize_step_avx512.h"
#include "kernels/quantized_attention.h"
#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

using dnnl::memory;

// Scores per chunk of query rows (128 rows of a global block): a product's K^T or V, copied
// into oneDNN's layout on each call, then serves more rows. Measured best here among 2^16 to
// 2^20; AGQ's planes share it among themselves.
constexpr int64_t kChunkScores = 1 << 19;

// Buffers of each thread, kept and only grown: every head of every block reuses them.
enum Slot {
  kQueryCodes,
  kKeyCodes,
  kValueCodes,
  kQueryValues,
  kRelH,
  kRelW,
  kScores,
  kScoreRow,
  kProbCodes,
  kProbs,
  kValues,
  kOutput,
  kOutputRows,
  kSlots
};

template <typename T>
T* scratch(Slot slot, int64_t count) {
  thread_local at::Tensor buffers[kSlots];
  at::Tensor& buffer = buffers[slot];
  const int64_t bytes = count * int64_t(sizeof(T));
  if (!buffer.defined() || buffer.numel() < bytes) buffer = at::empty({bytes}, at::kByte);
  return reinterpret_cast<T*>(buffer.data_ptr<uint8_t>());
}

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

// dst (rows x n, s32) = src (rows x k, u8 codes) times the s8 codes w (k x n; element (i, j) at
// w[i * row_stride + j * col_stride]), exactly: oneDNN's product where VNNI makes it exact, else
// float32 products of K-slices short enough to be exact (256 * 255 * 128 < 2^24) summed in
// int32. So the attention gives the same numbers on every CPU, and both backends can run it.
void exact_product(int64_t rows, const uint8_t* src, int64_t k, const uint8_t* w, int64_t n, int64_t row_stride,
                   int64_t col_stride, int32_t* dst) {
  if (integer_matmul_exact()) {
    const memory::desc weights({k, n}, memory::data_type::s8, {row_stride, col_stride});
    return int_matmul::run(rows, src, weights, w, dst);
  }
  const at::Tensor a = at::from_blob(const_cast<uint8_t*>(src), {rows, k}, at::kByte).to(at::kFloat);
  const at::Tensor b = at::from_blob(const_cast<uint8_t*>(w), {k, n}, {row_stride, col_stride}, at::kChar).to(at::kFloat);
  const at::Tensor sum = at::from_blob(dst, {rows, n}, at::kInt);
  sum.zero_();
  at::Tensor part = at::empty({rows, n}, at::kFloat);
  constexpr int64_t kExactSlice = 256;
  for (int64_t k0 = 0; k0 < k; k0 += kExactSlice) {
    const int64_t len = std::min(kExactSlice, k - k0);
    matmul_into(a.narrow(1, k0, len), b.narrow(0, k0, len), part);
    sum.add_(part.to(at::kInt));
  }
}

// exp(x[i] - max) in place, and their sum. Two vectors per step, summed apart: the exponential's
// long chain of dependent operations then overlaps (10-15% faster here).
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

// AGQ's levels as integer planes (IntegerAttention::log_probs): code c = tau e + r stands for
// scale 2^(-r / tau) 2^(-e); within residue class r the integer 2^(top - e), top = levels / tau
// - 1, is one set bit, which lies in byte plane (top - e) / 8 of that class. So sum_m p_m v_m =
// sum over planes of factor * (u8 plane . v), factor = scale 2^(-r / tau) 2^(8 j - top).
struct LogPlanes {
  int32_t tau_bits = 0, top = 0, per_class = 0, count = 0, levels = 0;
  std::vector<double> factors;
  float scale = 1.0f;
  uint32_t thresholds[4] = {0x800000u, 0x800000u, 0x800000u, 0x800000u};  // past tau: never reached
  // For grids of at most 16 levels: plane p's byte of each code (0 where the code is not in p).
  alignas(16) uint8_t plane_bytes[4][16] = {};
};

// Planes for power-of-two taus, when there are at most four (more would cost more than the
// float product they replace); count 0 otherwise.
LogPlanes log_planes(const LogProbabilities& log) {
  LogPlanes planes;
  const int32_t tau = int32_t(log.tau);
  if (double(tau) != log.tau || tau < 1 || (tau & (tau - 1)) != 0 || log.levels % tau != 0) return planes;
  planes.tau_bits = __builtin_ctz(uint32_t(tau));
  planes.top = log.levels / tau - 1;
  planes.per_class = planes.top / 8 + 1;
  planes.levels = log.levels;
  if (tau * planes.per_class > 4) return planes;
  planes.count = tau * planes.per_class;
  planes.scale = float(log.scale);
  const std::vector<uint32_t> thresholds = log_mantissa_thresholds(tau);
  std::copy(thresholds.begin(), thresholds.end(), planes.thresholds);
  for (int32_t r = 0; r < tau; ++r)
    for (int32_t j = 0; j < planes.per_class; ++j)
      planes.factors.push_back(log.scale * std::exp2(-double(r) / tau + 8.0 * j - planes.top));
  for (int32_t c = 0; c < std::min<int32_t>(planes.levels, 16); ++c) {
    const int32_t bit = planes.top - (c >> planes.tau_bits);
    planes.plane_bytes[(c & (tau - 1)) * planes.per_class + (bit >> 3)][c] = uint8_t(1 << (bit & 7));
  }
  return planes;
}

// Every plane of a row of n log codes (plane p's row at out + p * plane_stride), and each
// plane's sum.
void log_planes_generic(const int32_t* codes, int64_t n, const LogPlanes& planes, uint8_t* out, int64_t plane_stride,
                        int32_t* sums) {
  const int32_t residue_mask = (1 << planes.tau_bits) - 1;
  for (int32_t p = 0; p < planes.count; ++p) sums[p] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t c = codes[i];
    const int32_t bit = planes.top - (c >> planes.tau_bits);
    const int32_t plane = c < planes.levels ? (c & residue_mask) * planes.per_class + (bit >> 3) : -1;
    for (int32_t p = 0; p < planes.count; ++p) {
      const int32_t value = plane == p ? 1 << (bit & 7) : 0;
      out[p * plane_stride + i] = uint8_t(value);
      sums[p] += value;
    }
  }
}

// The same planes straight from a row of unnormalised exponentials e, the log codes computed
// on the way as the fake quantizer computes them (kernels/log_grid.h), with the normalisation
// and the division by the scale folded into one factor (one more float32 rounding of the
// ratio, among those the exponential brings): ratio = max(e * inv_sum / scale, 1e-20 / scale),
// code = clamp(tau (127 - exponent) - thresholds below the mantissa, 0, levels). A ratio that
// is subnormal or infinite clamps as the fake quantizer rounds it (to levels, resp. 0) for
// the grids planes serve (levels <= 126 tau).
// tau = 2^kTauBits and per_class = 2^kClassBits fixed: only tau threshold compares, shifts by
// immediates, and the planes' sums in registers.
// The log codes of 16 unnormalised exponentials, not yet clamped (lanes outside `lanes` read 0,
// whose code clamps to `levels`). A mantissa m is at least the threshold t exactly when adding
// 2^23 - t carries into the exponent, so (bits + 2^23 - t) >> 23 is the exponent plus that
// compare, and tau of them sum to tau * exponent + the thresholds below m: the code is
// tau * 127 minus that sum. `carries` holds 2^23 - t per threshold.
template <int kTauBits>
__attribute__((target("avx512f"), always_inline)) inline __m512i raw_log_codes16(const float* e, __mmask16 lanes,
                                                                                __m512 factor, __m512 tiny,
                                                                                const __m512i* carries) {
  // Positive after the max: the sign bit is clear, and the sums stay below 2^31.
  const __m512i bits = _mm512_castps_si512(_mm512_max_ps(_mm512_mul_ps(load16(e, lanes), factor), tiny));
  __m512i sum = _mm512_srli_epi32(_mm512_add_epi32(bits, carries[0]), 23);
  for (int t = 1; t < (1 << kTauBits); ++t)
    sum = _mm512_add_epi32(sum, _mm512_srli_epi32(_mm512_add_epi32(bits, carries[t]), 23));
  return _mm512_sub_epi32(_mm512_set1_epi32(127 << kTauBits), sum);
}

// The same clamped to [0, levels].
template <int kTauBits>
__attribute__((target("avx512f"), always_inline)) inline __m512i log_codes16(const float* e, __mmask16 lanes,
                                                                            __m512 factor, __m512 tiny,
                                                                            const __m512i* carries, __m512i levels) {
  const __m512i code = raw_log_codes16<kTauBits>(e, lanes, factor, tiny, carries);
  return _mm512_min_epi32(_mm512_max_epi32(code, _mm512_setzero_si512()), levels);
}

// 2^23 - t for each of the tau thresholds t, broadcast.
template <int kTauBits>
__attribute__((target("avx512f"), always_inline)) inline void threshold_carries(const LogPlanes& planes,
                                                                               __m512i* carries) {
  for (int t = 0; t < (1 << kTauBits); ++t) carries[t] = _mm512_set1_epi32(int32_t(0x800000u - planes.thresholds[t]));
}

template <int kTauBits, int kClassBits>
__attribute__((target("avx512f"))) void log_planes_avx512(const float* e, int64_t n, float inv_sum,
                                                          const LogPlanes& planes, uint8_t* out, int64_t plane_stride,
                                                          int32_t* sums) {
  constexpr int kTau = 1 << kTauBits, kPlanes = kTau << kClassBits;
  const __m512 factor = _mm512_set1_ps(inv_sum / planes.scale), tiny = _mm512_set1_ps(1e-20f / planes.scale);
  __m512i carries[kTau];
  threshold_carries<kTauBits>(planes, carries);
  const __m512i zero = _mm512_setzero_si512(), residue_mask = _mm512_set1_epi32(kTau - 1);
  const __m512i top = _mm512_set1_epi32(planes.top), levels = _mm512_set1_epi32(planes.levels);
  const __m512i seven = _mm512_set1_epi32(7), one = _mm512_set1_epi32(1);
  __m512i totals[kPlanes];
  for (auto& t : totals) t = zero;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = lanes16(i, n);
    const __m512i c = log_codes16<kTauBits>(e + i, lanes, factor, tiny, carries, levels);
    const __mmask16 valid = _mm512_mask_cmplt_epi32_mask(lanes, c, levels);  // code `levels` stands for 0
    const __m512i bit = _mm512_sub_epi32(top, _mm512_srai_epi32(c, kTauBits));
    __m512i plane_of = _mm512_slli_epi32(_mm512_and_si512(c, residue_mask), kClassBits);
    if (kClassBits > 0) plane_of = _mm512_add_epi32(plane_of, _mm512_srai_epi32(bit, 3));
    const __m512i value = _mm512_sllv_epi32(one, kClassBits > 0 ? _mm512_and_si512(bit, seven) : bit);
    for (int plane = 0; plane < kPlanes; ++plane) {
      const __mmask16 in_plane =
          kPlanes == 1 ? valid : _mm512_mask_cmpeq_epi32_mask(valid, plane_of, _mm512_set1_epi32(plane));
      const __m512i mine = _mm512_maskz_mov_epi32(in_plane, value);
      _mm512_mask_cvtepi32_storeu_epi8(out + plane * plane_stride + i, lanes, mine);
      totals[plane] = _mm512_add_epi32(totals[plane], mine);
    }
  }
  for (int plane = 0; plane < kPlanes; ++plane) sums[plane] = _mm512_reduce_add_epi32(totals[plane]);
}

// The same for grids of at most 16 levels (every 4-bit grid): 64 codes at a time packed into
// bytes, each plane's bytes looked up in a 16-entry table (a byte shuffle), its sum by
// sum-of-absolute-differences. About half the work of the pass above at four planes.
template <int kTauBits, int kPlanes>
__attribute__((target("avx512f,avx512bw"))) void log_planes_packed_avx512(const float* e, int64_t n, float inv_sum,
                                                                        const LogPlanes& planes, uint8_t* out,
                                                                        int64_t plane_stride, int32_t* sums) {
  constexpr int kTau = 1 << kTauBits;
  __m512i lookup[kPlanes], totals[kPlanes];
  for (int p = 0; p < kPlanes; ++p) {
    lookup[p] = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(planes.plane_bytes[p])));
    totals[p] = _mm512_setzero_si512();
  }
  const __m512 factor = _mm512_set1_ps(inv_sum / planes.scale), tiny = _mm512_set1_ps(1e-20f / planes.scale);
  __m512i carries[kTau];
  threshold_carries<kTauBits>(planes, carries);
  const __m512i level_bytes = _mm512_set1_epi8(char(planes.levels));
  // The saturating packs interleave their sources per 128-bit lane: dword 4 L + s holds codes
  // 4 L .. 4 L + 3 of source s; this puts them back in order.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t i = 0; i < n; i += 64) {
    const int64_t left = n - i;
    const __m512i c0 = raw_log_codes16<kTauBits>(e + i, lanes16(i, n), factor, tiny, carries);
    const __m512i c1 = raw_log_codes16<kTauBits>(e + i + 16, lanes16(i + 16, n), factor, tiny, carries);
    const __m512i c2 = raw_log_codes16<kTauBits>(e + i + 32, lanes16(i + 32, n), factor, tiny, carries);
    const __m512i c3 = raw_log_codes16<kTauBits>(e + i + 48, lanes16(i + 48, n), factor, tiny, carries);
    // Codes lie within +-131 tau: int16 holds them, and the unsigned byte pack clamps them at 0.
    const __m512i packed = _mm512_packus_epi16(_mm512_packs_epi32(c0, c1), _mm512_packs_epi32(c2, c3));
    const __m512i codes = _mm512_min_epu8(_mm512_permutexvar_epi32(order, packed), level_bytes);
    const __mmask64 lanes = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    const __mmask64 valid = _mm512_mask_cmplt_epu8_mask(lanes, codes, level_bytes);  // code `levels` stands for 0
    for (int p = 0; p < kPlanes; ++p) {
      const __m512i bytes = _mm512_maskz_shuffle_epi8(valid, lookup[p], codes);
      _mm512_mask_storeu_epi8(out + p * plane_stride + i, lanes, bytes);
      totals[p] = _mm512_add_epi64(totals[p], _mm512_sad_epu8(bytes, _mm512_setzero_si512()));
    }
  }
  for (int p = 0; p < kPlanes; ++p) sums[p] = int32_t(_mm512_reduce_add_epi64(totals[p]));
}

// log_planes (at most four planes): per_class = (levels / tau - 1) / 8 + 1 is a power of two,
// levels / tau being one.
void log_planes_avx512(const float* e, int64_t n, float inv_sum, const LogPlanes& planes, uint8_t* out,
                       int64_t plane_stride, int32_t* sums) {
  if (planes.levels <= 16) {
    switch (planes.tau_bits * 8 + planes.count) {
      case 1: return log_planes_packed_avx512<0, 1>(e, n, inv_sum, planes, out, plane_stride, sums);
      case 2: return log_planes_packed_avx512<0, 2>(e, n, inv_sum, planes, out, plane_stride, sums);
      case 10: return log_planes_packed_avx512<1, 2>(e, n, inv_sum, planes, out, plane_stride, sums);
      case 20: return log_planes_packed_avx512<2, 4>(e, n, inv_sum, planes, out, plane_stride, sums);
      default: break;
    }
  }
  const int class_bits = __builtin_ctz(uint32_t(planes.per_class));
  switch (planes.tau_bits * 4 + class_bits) {
    case 0: return log_planes_avx512<0, 0>(e, n, inv_sum, planes, out, plane_stride, sums);
    case 1: return log_planes_avx512<0, 1>(e, n, inv_sum, planes, out, plane_stride, sums);
    case 2: return log_planes_avx512<0, 2>(e, n, inv_sum, planes, out, plane_stride, sums);
    case 4: return log_planes_avx512<1, 0>(e, n, inv_sum, planes, out, plane_stride, sums);
    case 5: return log_planes_avx512<1, 1>(e, n, inv_sum, planes, out, plane_stride, sums);
    case 8: return log_planes_avx512<2, 0>(e, n, inv_sum, planes, out, plane_stride, sums);
    default: throw Error("quantized attention", "log planes beyond four");
  }
}

// out[r][j] = sum over planes, in order, of float(acc + row_term) * factor, factor = the
// plane's factor * v_scale (LogPlanes::factors scaled once per head, not per chunk). The first
// plane is stored, not added to zero: the same float32 sums. Not contracted into FMAs, so every
// clone rounds alike.
static inline __attribute__((always_inline)) void combine_planes_body(
    const int32_t* acc, const float* factors, int32_t count, int64_t rows, int64_t dv, const int32_t* row_terms,
    float* out, int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = out + r * out_stride;
    {
      const int32_t* a = acc + r * dv;
      const int32_t term = row_terms[r];
      const float factor = factors[0];
      for (int64_t j = 0; j < dv; ++j) dst[j] = float(a[j] + term) * factor;
    }
    for (int32_t plane = 1; plane < count; ++plane) {
      const int32_t* a = acc + (plane * rows + r) * dv;
      const int32_t term = row_terms[plane * rows + r];
      const float factor = factors[plane];
      for (int64_t j = 0; j < dv; ++j) dst[j] += float(a[j] + term) * factor;
    }
  }
}
PTQ4SAM_DISPATCH_BY_ISA(void, combine_planes, (const int32_t* acc, const float* factors, int32_t count, int64_t rows, int64_t dv, const int32_t* row_terms, float* out, int64_t out_stride), (acc, factors, count, rows, dv, row_terms, out, out_stride))

// SAM's decomposed relative positions as the kernel reads them: per query grid row (h) or
// column (w), its (k_h x d) or (k_w x d) table transposed to d x pad, its key columns padded
// with zeros to whole vectors of 16.
struct RelativeTables {
  at::Tensor h, w;  // (q_h, d, pad_h) and (q_w, d, pad_w), contiguous
  int64_t q_h = 0, q_w = 0, k_h = 0, k_w = 0, pad_h = 0, pad_w = 0;
  bool defined() const { return h.defined(); }
};

int64_t whole_vectors(int64_t n) { return (n + 15) / 16 * 16; }

// The tables of heads of d channels; throws Error unless both or neither are given, each
// (q, k, d). Which grid they must cover is the caller's check.
RelativeTables relative_tables(const at::Tensor& rel_pos_h, const at::Tensor& rel_pos_w, int64_t d) {
  RelativeTables t;
  if (rel_pos_h.defined() != rel_pos_w.defined() ||
      (rel_pos_h.defined() && (rel_pos_h.dim() != 3 || rel_pos_w.dim() != 3 || rel_pos_h.size(2) != d ||
                               rel_pos_w.size(2) != d)))
    throw Error("quantized attention", "relative positions must be two tables of (queries, keys, head channels)");
  if (!rel_pos_h.defined()) return t;
  t.q_h = rel_pos_h.size(0), t.k_h = rel_pos_h.size(1), t.q_w = rel_pos_w.size(0), t.k_w = rel_pos_w.size(1);
  t.pad_h = whole_vectors(t.k_h), t.pad_w = whole_vectors(t.k_w);
  const auto transposed = [](const at::Tensor& table, int64_t pad) {
    at::Tensor out = at::zeros({table.size(0), table.size(2), pad}, at::kFloat);
    out.narrow(2, 0, table.size(1)).copy_(table.permute({0, 2, 1}));
    return out;
  };
  t.h = transposed(rel_pos_h.to(at::kFloat), t.pad_h);
  t.w = transposed(rel_pos_w.to(at::kFloat), t.pad_w);
  return t;
}

// out[r][j] = sum_c q[r][c] table[c][j] over `rows` rows (q and out strided, table d x pad),
// summed in order of c, one fused multiply-add each: the generic version's numbers too. Four
// rows at once, so that the FMAs' latency overlaps.
template <int kVectors>
__attribute__((target("avx512f"))) void rows_times_table_avx512(const float* q, int64_t q_stride, int64_t rows,
                                                                const float* table, int64_t d, int64_t pad,
                                                                float* out, int64_t out_stride) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    __m512 acc[4][kVectors];
    for (auto& row : acc)
      for (auto& a : row) a = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      __m512 t[kVectors];
      for (int v = 0; v < kVectors; ++v) t[v] = _mm512_loadu_ps(table + c * pad + 16 * v);
      for (int i = 0; i < 4; ++i) {
        const __m512 x = _mm512_set1_ps(q[(r + i) * q_stride + c]);
        for (int v = 0; v < kVectors; ++v) acc[i][v] = _mm512_fmadd_ps(x, t[v], acc[i][v]);
      }
    }
    for (int i = 0; i < 4; ++i)
      for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + (r + i) * out_stride + 16 * v, acc[i][v]);
  }
  for (; r < rows; ++r) {
    __m512 acc[kVectors];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      const __m512 x = _mm512_set1_ps(q[r * q_stride + c]);
      for (int v = 0; v < kVectors; ++v) acc[v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(table + c * pad + 16 * v), acc[v]);
    }
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + r * out_stride + 16 * v, acc[v]);
  }
}

void rows_times_table_generic(const float* q, int64_t q_stride, int64_t rows, const float* table, int64_t d,
                              int64_t pad, int64_t width, float* out, int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < width; ++j) {
      float acc = 0.0f;
      for (int64_t c = 0; c < d; ++c) acc = std::fma(q[r * q_stride + c], table[c * pad + j], acc);
      out[r * out_stride + j] = acc;
    }
}

// rows_times_table over all `pad` columns, 64 at a time.
void rows_times_table(const float* q, int64_t q_stride, int64_t rows, const float* table, int64_t d, int64_t pad,
                      float* out, int64_t out_stride) {
  for (int64_t j = 0; j < pad; j += 64) {
    const int64_t width = std::min<int64_t>(64, pad - j);
    float* dst = out + j;
    if (!has_avx512()) {
      rows_times_table_generic(q, q_stride, rows, table + j, d, pad, width, dst, out_stride);
      continue;
    }
    switch (width / 16) {
      case 1: rows_times_table_avx512<1>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
      case 2: rows_times_table_avx512<2>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
      case 3: rows_times_table_avx512<3>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
      default: rows_times_table_avx512<4>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
    }
  }
}

// A head's relative-position terms from its dequantized queries (n = q_h x q_w, query r at grid
// row r / q_w, column r % q_w: the first q_h and q_w of the tables' rows): rel_h (n x pad_h)
// grid row by grid row, rel_w (n x pad_w) column by column, each table read once.
void relative_terms(const float* q_values, int64_t d, const RelativeTables& t, int64_t q_h, int64_t q_w,
                    float* rel_h, float* rel_w) {
  for (int64_t i = 0; i < q_h; ++i)
    rows_times_table(q_values + i * q_w * d, d, q_w, t.h.data_ptr<float>() + i * d * t.pad_h, d, t.pad_h,
                     rel_h + i * q_w * t.pad_h, t.pad_h);
  for (int64_t j = 0; j < q_w; ++j)
    rows_times_table(q_values + j * d, q_w * d, q_h, t.w.data_ptr<float>() + j * d * t.pad_w, d, t.pad_w,
                     rel_w + j * t.pad_w, q_w * t.pad_w);
}

// The operands of one head: n query rows (a q_h x q_w grid where there are relative
// positions), m key and value rows, as floats or as codes, and where each query's output row
// goes.
struct HeadOperands {
  Rows q, k, v;
  CodeRows q_codes, k_codes, v_codes;
  bool on_codes = false;
  OutRows out;
  int64_t n, m, q_h, q_w;
};

// How P V runs: on affine codes, on log planes, or in float32 on the log quantizer's values.
enum class ProbsProduct { kAffine, kLogPlanes, kLogFloat };

void one_head(const HeadOperands& op, int64_t d, int64_t dv, const IntegerAttention& quant, const LogPlanes& planes,
              const RelativeTables& rel) {
  const int64_t n = op.n, m = op.m;
  const ProbsProduct mode = !quant.log_probs ? ProbsProduct::kAffine
                            : planes.count > 0 ? ProbsProduct::kLogPlanes
                                               : ProbsProduct::kLogFloat;
  // Codes of the whole head: q (u8), k and v (s8, the weights side), with their sums.
  uint8_t* q_codes = scratch<uint8_t>(kQueryCodes, n * d);
  uint8_t* k_codes = scratch<uint8_t>(kKeyCodes, m * d);
  uint8_t* v_codes = scratch<uint8_t>(kValueCodes, m * dv);
  thread_local std::vector<int32_t> q_sums, k_sums, col_k, col_v, row_terms, code_row;
  q_sums.resize(size_t(n));
  k_sums.resize(size_t(m));
  col_k.resize(size_t(m));
  col_v.assign(size_t(dv), 0);
  code_row.resize(size_t(m));
  if (op.on_codes) {
    gather_rows(op.q_codes, n, d, false, q_codes, q_sums.data());
    gather_rows(op.k_codes, m, d, true, k_codes, k_sums.data());
    gather_rows(op.v_codes, m, dv, true, v_codes, nullptr);
  } else {
    quantize_rows(op.q, n, d, quant.q, false, q_codes, q_sums.data());
    quantize_rows(op.k, m, d, quant.k, true, k_codes, k_sums.data());
    quantize_rows(op.v, m, dv, quant.v, true, v_codes, nullptr);
  }
  const int32_t zq = quant.q.zero_point + int_matmul::u8_shift(quant.q);
  const int32_t zk = quant.k.zero_point + int_matmul::u8_shift(quant.k) - 128;
  const int32_t zv = quant.v.zero_point + int_matmul::u8_shift(quant.v) - 128;
  // Keys are the columns of Q K^T: acc - zk sum(q) + their column term.
  for (int64_t j = 0; j < m; ++j) col_k[size_t(j)] = int_matmul::column_term(zq, zk, d, k_sums[size_t(j)]);
  // The relative positions on the fake quantizer's q values: (code - zq) * scale, exactly.
  float *rel_h = nullptr, *rel_w = nullptr;
  if (rel.defined()) {
    float* q_values = scratch<float>(kQueryValues, n * d);
    for (int64_t i = 0; i < n * d; ++i) q_values[i] = float(int32_t(q_codes[i]) - zq) * quant.q.scale;
    rel_h = scratch<float>(kRelH, n * rel.pad_h);
    rel_w = scratch<float>(kRelW, n * rel.pad_w);
    relative_terms(q_values, d, rel, op.q_h, op.q_w, rel_h, rel_w);
  }
  const float qk_scale = float(double(quant.q.scale * quant.k.scale) * std::pow(double(d), -0.5));

  int32_t zp = 0;
  float pv_scale = 0.0f;
  float* values = nullptr;
  if (mode == ProbsProduct::kAffine) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < dv; ++j) col_v[size_t(j)] += int8_t(v_codes[r * dv + j]);
    zp = quant.probs.zero_point + int_matmul::u8_shift(quant.probs);
    for (auto& c : col_v) c = int_matmul::column_term(zp, zv, m, c);
    pv_scale = quant.probs.scale * quant.v.scale;
  } else if (mode == ProbsProduct::kLogFloat) {
    values = scratch<float>(kValues, m * dv);
    for (int64_t i = 0; i < m * dv; ++i) values[i] = float(int32_t(int8_t(v_codes[i])) - zv) * quant.v.scale;
  }

  float plane_factors[4] = {};
  for (int32_t plane = 0; plane < planes.count; ++plane)
    plane_factors[plane] = float(planes.factors[size_t(plane)] * quant.v.scale);
  const int64_t prob_planes = mode == ProbsProduct::kLogPlanes ? planes.count : 1;
  const int64_t chunk =
      std::max<int64_t>(1, std::min<int64_t>(n, kChunkScores / prob_planes / std::max<int64_t>(m, 1)));
  int32_t* scores = scratch<int32_t>(kScores, chunk * m);
  uint8_t* prob_codes_buf = scratch<uint8_t>(kProbCodes, prob_planes * chunk * m);
  float* row_probs = scratch<float>(kScoreRow, m);
  float* probs = mode == ProbsProduct::kLogFloat ? scratch<float>(kProbs, chunk * m) : nullptr;
  int32_t* output = scratch<int32_t>(kOutput, prob_planes * chunk * dv);
  row_terms.resize(size_t(prob_planes * chunk));
  const float lo = float(quant.probs.quant_min), hi = float(quant.probs.quant_max);
  const int32_t p_shift = int_matmul::u8_shift(quant.probs);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    exact_product(rows, q_codes + r0 * d, d, k_codes, m, 1, d, scores);  // K^T: (d x m) over k's rows
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = r0 + r;
      float* p = row_probs;
      const float max = score_row(scores + r * m, p, rel_h ? rel.k_h : 1, rel_h ? rel.k_w : m,
                                  -zk * q_sums[size_t(row)], col_k.data(), qk_scale,
                                  rel_h ? rel_h + row * rel.pad_h : nullptr, rel_w ? rel_w + row * rel.pad_w : nullptr);
      const float inv_sum = 1.0f / (has_avx512() ? exp_shifted_avx512 : exp_shifted_generic)(p, m, max);
      if (mode == ProbsProduct::kAffine) {
        const int32_t sum = (has_avx512() ? prob_codes_avx512 : prob_codes_generic)(
            p, prob_codes_buf + r * m, m, inv_sum / quant.probs.scale, float(quant.probs.zero_point), lo, hi, p_shift);
        row_terms[size_t(r)] = -zv * sum;
        continue;
      }
      if (mode == ProbsProduct::kLogPlanes) {
        int32_t sums[4];
        if (has_avx512()) {
          log_planes_avx512(p, m, inv_sum, planes, prob_codes_buf + r * m, rows * m, sums);
        } else {
          scale_row(p, m, inv_sum);
          quant.log_probs->codes(p, code_row.data(), m);
          log_planes_generic(code_row.data(), m, planes, prob_codes_buf + r * m, rows * m, sums);
        }
        for (int32_t plane = 0; plane < planes.count; ++plane) row_terms[size_t(plane * rows + r)] = -zv * sums[plane];
        continue;
      }
      scale_row(p, m, inv_sum);
      quant.log_probs->codes(p, code_row.data(), m);
      {
        const float* table = quant.log_probs->values.data();
        for (int64_t i = 0; i < m; ++i) probs[r * m + i] = table[code_row[size_t(i)]];
      }
    }
    // Output rows in place where they lie at one stride, else gathered here and then scattered.
    float* out = op.out.index ? scratch<float>(kOutputRows, rows * dv) : op.out(r0);
    const int64_t out_stride = op.out.index ? dv : op.out.stride;
    if (mode == ProbsProduct::kAffine) {
      exact_product(rows, prob_codes_buf, m, v_codes, dv, dv, 1, output);
      dequantize_rows(output, rows, dv, row_terms.data(), col_v.data(), pv_scale, out, out_stride);
    } else if (mode == ProbsProduct::kLogPlanes) {
      // Every plane's rows in one product, then their sum weighted by the planes' factors.
      exact_product(planes.count * rows, prob_codes_buf, m, v_codes, dv, dv, 1, output);
      combine_planes(output, plane_factors, planes.count, rows, dv, row_terms.data(), out, out_stride);
    } else {
      const auto f32 = at::TensorOptions().dtype(at::kFloat);
      matmul_into(at::from_blob(probs, {rows, m}, f32), at::from_blob(values, {m, dv}, f32),
                  at::from_blob(out, {rows, dv}, {out_stride, 1}, f32));
    }
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
  at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / num_heads, h = job % num_heads;
      HeadOperands op;
      if (on_codes) {
        op.on_codes = true;
        op.q_codes = {q.data_ptr<uint8_t>() + b * q.stride(0) + h * d, q.stride(1)};
        op.k_codes = {k.data_ptr<uint8_t>() + b * k.stride(0) + h * d, k.stride(1)};
        op.v_codes = {v.data_ptr<uint8_t>() + b * v.stride(0) + h * dv, v.stride(1)};
      } else {
        op.q = {q.data_ptr<float>() + b * q.stride(0) + h * d, q.stride(1)};
        op.k = {k.data_ptr<float>() + b * k.stride(0) + h * d, k.stride(1)};
        op.v = {v.data_ptr<float>() + b * v.stride(0) + h * dv, v.stride(1)};
      }
      op.out = {out.data_ptr<float>() + b * out.stride(0) + h * dv, out.stride(1)};
      op.n = n, op.m = m, op.q_h = rel.q_h, op.q_w = rel.q_w;
      one_head(op, d, dv, quant, planes, rel);
    }
  });
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
  at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const Window& win = grid[size_t(job / num_heads)];
      const int64_t h = job % num_heads;
      HeadOperands op;
      const auto rows_from = [&](auto* base, auto* pad, int64_t column, const std::vector<int64_t>& index) {
        using Row = std::remove_const_t<std::remove_pointer_t<decltype(base)>>;
        return RowsOf<Row>{base + column, stride, index.data(), pad ? pad + column : nullptr};
      };
      if (on_codes) {
        op.on_codes = true;
        const uint8_t* base = qkv.data_ptr<uint8_t>();
        const uint8_t* pad = padded ? padding.data_ptr<uint8_t>() : nullptr;
        op.q_codes = rows_from(base, static_cast<const uint8_t*>(nullptr), h * d, win.queries);
        op.k_codes = rows_from(base, pad, c + h * d, win.keys);
        op.v_codes = rows_from(base, pad, 2 * c + h * d, win.keys);
      } else {
        const float* base = qkv.data_ptr<float>();
        const float* pad = padded ? padding.data_ptr<float>() : nullptr;
        op.q = rows_from(base, static_cast<const float*>(nullptr), h * d, win.queries);
        op.k = rows_from(base, pad, c + h * d, win.keys);
        op.v = rows_from(base, pad, 2 * c + h * d, win.keys);
      }
      op.out = {out.data_ptr<float>() + h * d, c, win.queries.data()};
      op.n = int64_t(win.queries.size()), op.m = window * window, op.q_h = win.q_h, op.q_w = win.q_w;
      one_head(op, d, d, quant, planes, rel);
    }
  });
  return out;
}

}  // namespace ptq4sam::kernels
