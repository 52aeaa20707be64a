#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>

#include "kernels/exp.h"
#include "kernels/gelu.h"
#include "kernels/load_avx512.h"
#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

// erf(z) = sign(z) (1 - t (a1 + a2 t + ... + a5 t^4) e^(-z^2)), t = 1 / (1 + p |z|).
constexpr float kP = 0.3275911f;
constexpr float kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f, kA4 = -1.453152027f,
                kA5 = 1.061405429f;
constexpr float kSqrtHalf = 0.70710678118654752f;

// Masked tails: the last partial vector runs the same instructions as every other.
__attribute__((target("avx512f"))) void gelu_avx512(float* x, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  const __m512i sign_bit = _mm512_set1_epi32(int32_t(0x80000000u));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = lanes16(i, n);
    const __m512 v = load16(x + i, lanes);
    const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(kSqrtHalf));
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), sign_bit);
    const __m512 a = _mm512_abs_ps(z);
    // A true division, not rcp14 and a Newton step: rcp14's bits are the CPU's own, and the
    // generic version must give the same numbers.
    const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(kP), a, one);
    const __m512 t = _mm512_div_ps(one, d);
    __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(kA5), t, _mm512_set1_ps(kA4));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA3));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA2));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA1));
    const __m512 neg_square = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mul_ps(z, z)), sign_bit));
    const __m512 decay = _mm512_mul_ps(exp_avx512(neg_square), t);
    const __m512 erf = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_fnmadd_ps(decay, poly, one)), sign));
    _mm512_mask_storeu_ps(x + i, lanes, _mm512_mul_ps(_mm512_mul_ps(v, half), _mm512_add_ps(one, erf)));
  }
}

// gelu_avx512 lane by lane, the same operations: the same bits.
void gelu_generic(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float z = v * kSqrtHalf;
    const float t = 1.0f / std::fma(kP, std::fabs(z), 1.0f);
    float poly = std::fma(kA5, t, kA4);
    poly = std::fma(poly, t, kA3);
    poly = std::fma(poly, t, kA2);
    poly = std::fma(poly, t, kA1);
    const float decay = exp_scalar(-(z * z)) * t;
    // The sign flipped as the vector code's xor does (not copysign: the value may be -0 or below).
    const float magnitude = std::fma(-decay, poly, 1.0f);
    const float erf = std::signbit(z) ? -magnitude : magnitude;
    x[i] = (v * 0.5f) * (1.0f + erf);
  }
}

}  // namespace

void gelu_inplace(float* x, int64_t n) {
  (has_avx512() ? gelu_avx512 : gelu_generic)(x, n);
}

at::Tensor& gelu_(at::Tensor& x) {
  if (x.scalar_type() != at::kFloat || !x.is_contiguous()) throw Error("gelu", "needs a contiguous float32 tensor");
  float* data = x.data_ptr<float>();
  at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t begin, int64_t end) { gelu_inplace(data + begin, end - begin); });
  return x;
}

}  // namespace ptq4sam::kernels
