#pragma once
// What the AVX-512 kernels share around their arithmetic: the check that picks them, and
// loads of up to 16 lanes, a whole vector by a plain load, a tail by a masked one (its other
// lanes 0). On this machine's CPU (AMD EPYC) a masked load whose line is
// not in L1 cost four times a plain one: quantizing 4096 x 768 float32 activations from memory
// took 0.95 ms with masked loads throughout, 0.22 ms with plain ones. Only CPU files include it.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu_isa.h"

namespace ptq4sam::kernels {

// AVX-512 with byte and 128-bit forms (every AVX-512 CPU since Skylake-SP), not turned off by
// PTQ4SAM_CPU: what every kernel's AVX-512 version may use.
inline bool has_avx512() { return cpu_has(CpuIsa::kAvx512); }

// The lanes of the 16 elements from i of n: all, the tail's first n - i, or none past n.
inline __mmask16 lanes16(int64_t i, int64_t n) {
  return n - i >= 16 ? __mmask16(0xffff) : n > i ? __mmask16((1u << (n - i)) - 1) : __mmask16(0);
}

__attribute__((target("avx512f"), always_inline)) inline __m512 load16(const float* p, __mmask16 lanes) {
  return lanes == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes, p);
}

__attribute__((target("avx512f"), always_inline)) inline __m512i load16(const int32_t* p, __mmask16 lanes) {
  return lanes == 0xffff ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(lanes, p);
}

}  // namespace ptq4sam::kernels
