#pragma once
// The fake quantizer's float32 steps for one value: clamp(round(x / scale) + zero_point, lo, hi),
// in the seed's order, shared by the simulated quantizer and the integer runtime's input codes
// so that the two agree bit for bit.

namespace ptq4sam::kernels {

// x / scale is clamped below 2^22 first, so that adding and taking away 1.5 * 2^23 rounds half
// to even (as std::nearbyint and at::round) by the float adder itself; the final clamp makes
// that invisible. The clamps are std::max / std::min spelled out, and floating-point traps are
// declared absent, which changes no value: only then does GCC vectorize the loops around it.
// Callers' loops need the same optimize attribute for it to inline.
__attribute__((optimize("no-trapping-math"), always_inline)) inline float quantize_step(float x, float scale,
                                                                                     float zero_point, float lo,
                                                                                     float hi) {
  constexpr float kMagic = 12582912.0f, kLimit = 4194304.0f;  // 1.5 * 2^23, 2^22
  float v = x / scale;
  v = v < -kLimit ? -kLimit : v;
  v = kLimit < v ? kLimit : v;
  float q = ((v + kMagic) - kMagic) + zero_point;
  q = q < lo ? lo : q;
  return hi < q ? hi : q;
}

}  // namespace ptq4sam::kernels
