#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu_isa.h"
#include "kernels/load_avx512.h"
#include "kernels/log_grid.h"
#include "kernels/log_planes.h"
#include "util/error.h"

namespace ptq4sam::kernels {

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

// tau = 2^kTauBits and per_class = 2^kClassBits fixed: only tau threshold compares, shifts by
// immediates, and the planes' sums in registers.
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

// The first plane is stored, not added to zero: the same float32 sums. Not contracted into FMAs, so every
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

}  // namespace ptq4sam::kernels
