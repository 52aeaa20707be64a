#pragma once
// What the AVX-512 kernels share around their arithmetic: loads of up to 16 lanes, a whole
// vector by a plain load, a tail by a masked one (its other lanes 0), because on some CPUs (AMD
// EPYC among them) a masked load whose line is not in L1 costs several plain ones
// (bench/bench_quantized_linear.cc times the activation pass that reads this way). Only CPU
// files include it.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu_isa.h"

namespace ptq4sam::kernels {

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
