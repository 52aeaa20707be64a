#pragma once
// The float32 exponential the integer runtime's kernels share (the softmax of the integer
// attention, GELU): one scheme, in AVX-512 and in scalar code with the same operations, so that
// every kernel on every CPU level rounds e^x alike. Only CPU files include it.
#include <immintrin.h>

#include <cmath>

namespace ptq4sam::kernels {

// e^x for x <= 0 (below -87.34, e^-87.34, the smallest normal result): Cephes' single-precision
// scheme, x = n ln2 + r with |r| <= ln2 / 2, a degree-7 polynomial for e^r, and 2^n by
// scalef. Within 2 ulp of expf.
__attribute__((target("avx512f"), always_inline)) inline __m512 exp_avx512(__m512 x) {
  const __m512 v = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f),
                                    _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), v));
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  return _mm512_scalef_ps(_mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f)), k);
}

// exp_avx512's operations one lane at a time (max_ps's NaN rule, roundscale's ties to even,
// the fused multiply-adds, scalef as ldexp): the same bits.
inline float exp_scalar(float x) {
  const float v = x > -87.33654f ? x : -87.33654f;
  const float k = std::nearbyint(v * 1.44269504088896341f);
  const float r = std::fma(-k, -2.12194440e-4f, std::fma(-k, 0.693359375f, v));
  float p = std::fma(1.9875691500e-4f, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  return std::ldexp(std::fma(p, r * r, r) + 1.0f, int(k));
}

// _mm512_reduce_add_ps's order (GCC's): halves, quarters, then pairs.
inline float reduce_add16(const float* lanes) {
  float eighths[8], quarters[4];
  for (int i = 0; i < 8; ++i) eighths[i] = lanes[i + 8] + lanes[i];
  for (int i = 0; i < 4; ++i) quarters[i] = eighths[i + 4] + eighths[i];
  return (quarters[0] + quarters[2]) + (quarters[1] + quarters[3]);
}

}  // namespace ptq4sam::kernels
