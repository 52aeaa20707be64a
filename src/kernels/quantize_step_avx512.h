#pragma once
// quantize_step's last steps for 16 values at once, shared by the integer kernels' AVX-512
// passes (activation codes, the probabilities' codes). Only CPU files include it.
#include <immintrin.h>

#include <cstdint>

namespace ptq4sam::kernels {

// A grid's integers, broadcast: zero point, clamps, and the shift into u8 (or s8) containers.
struct CodeGrid16 {
  __m512i zero_point, low, high, shift;
};

__attribute__((target("avx512f"), always_inline)) inline CodeGrid16 code_grid16(float zero_point, float lo, float hi,
                                                                                int32_t shift) {
  return {_mm512_set1_epi32(int32_t(zero_point)), _mm512_set1_epi32(int32_t(lo)), _mm512_set1_epi32(int32_t(hi)),
          _mm512_set1_epi32(shift)};
}

// The codes of v (values already divided by the scale and clamped to +-2^22): rounded half to
// even by cvtps (as quantize_step), the zero point added and the clamps applied in integers,
// which gives quantize_step's codes; then shifted. Stores them as bytes at out's `lanes` and
// returns them (0 outside `lanes`), for the caller's sums.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512i store_codes16(
    __m512 v, __mmask16 lanes, const CodeGrid16& grid, uint8_t* out) {
  __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                               grid.zero_point);
  q = _mm512_min_epi32(_mm512_max_epi32(q, grid.low), grid.high);
  const __m512i code = _mm512_maskz_add_epi32(lanes, q, grid.shift);
  // Narrowed in a register, then stored: the narrowing store to memory is several times slower.
  _mm_mask_storeu_epi8(out, lanes, _mm512_cvtepi32_epi8(code));
  return code;
}

}  // namespace ptq4sam::kernels
