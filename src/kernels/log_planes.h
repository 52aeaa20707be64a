#pragma once
// AGQ's probabilities as integer planes, so that P V on a log grid runs as a few exact u8 x s8
// products (kernels/quantized_attention_cpu.cc) instead of one in float32.
#include <cstdint>
#include <vector>

#include "kernels/quantized_attention.h"

namespace ptq4sam::kernels {

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
LogPlanes log_planes(const LogProbabilities& log);

// Every plane of a row of n log codes (plane p's row at out + p * plane_stride), and each
// plane's sum.
void log_planes_generic(const int32_t* codes, int64_t n, const LogPlanes& planes, uint8_t* out, int64_t plane_stride,
                        int32_t* sums);

// The same planes straight from a row of n unnormalised exponentials e (times inv_sum, the
// probabilities), the log codes computed on the way as the fake quantizer computes them
// (kernels/log_grid.h), with the normalisation and the division by the scale folded into one
// factor (one more float32 rounding of the ratio, among those the exponential brings): ratio =
// max(e * inv_sum / scale, 1e-20 / scale), code = clamp(tau (127 - exponent) - thresholds below
// the mantissa, 0, levels). A ratio that is subnormal or infinite clamps as the fake quantizer
// rounds it (to levels, resp. 0) for the grids planes serve (levels <= 126 tau). AVX-512 only.
void log_planes_avx512(const float* e, int64_t n, float inv_sum, const LogPlanes& planes, uint8_t* out,
                       int64_t plane_stride, int32_t* sums);

// out[r][j] = sum over planes, in order, of float(acc + row_term) * factor, factor = the
// plane's factor * v_scale (LogPlanes::factors scaled once per head, not per chunk); plane p's
// rows of acc (rows x dv) and row_terms at p * rows.
void combine_planes(const int32_t* acc, const float* factors, int32_t count, int64_t rows, int64_t dv,
                    const int32_t* row_terms, float* out, int64_t out_stride);

}  // namespace ptq4sam::kernels
